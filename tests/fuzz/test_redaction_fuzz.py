"""PII redaction fuzzed: redacting twice is redacting once, the spans are ordered, apart and
inside the text, nothing outside them changes, and a value of each kind planted among any
words is found whole."""

from __future__ import annotations

import re
import string

from hypothesis import example, given
from hypothesis import strategies as st

from mpp.validation import PII_KINDS, iban_valid, luhn_valid, pii_spans, redact_pii

from .strategies import chat_text, fuzz


@fuzz(800)
@given(chat_text)
@example("a@b.cd@e.fg 4111 1111 1111 1111 1 234 567 890")
@example("SSN 078-05-1120 219099999 ssn")
@example("4111111111111111DE89370400440532013000")  # the IBAN was found only once "[card]"
def test_redacting_twice_is_redacting_once(text: str) -> None:
    redacted, kinds = redact_pii(text)
    assert redact_pii(redacted) == (redacted, [])
    assert set(kinds) <= set(PII_KINDS)


@fuzz(800)
@given(chat_text)
def test_spans_are_ordered_apart_and_only_they_change(text: str) -> None:
    spans = pii_spans(text)
    done = 0
    rebuilt = []
    for start, end, kind in spans:
        assert done <= start < end <= len(text) and kind in PII_KINDS
        rebuilt += [text[done:start], f"[{kind}]"]
        done = end
    redacted, kinds = redact_pii(text)
    assert redacted == "".join([*rebuilt, text[done:]])
    assert kinds == [kind for kind in PII_KINDS if any(s.kind == kind for s in spans)]


@fuzz(300)
@given(st.text(alphabet=st.characters(blacklist_categories=["Nd"], blacklist_characters="@")))
def test_text_without_digits_or_at_signs_is_left_alone(text: str) -> None:
    assert redact_pii(text) == (text, [])


# Values of each kind, built the way their issuers build them.
digits = st.text(alphabet=string.digits, min_size=1, max_size=1)


@st.composite
def cards(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from([("4", 16), ("51", 16), ("37", 15), ("6011", 16)]))
    body = prefix + "".join(draw(digits) for _ in range(length - len(prefix) - 1))
    number = next(body + d for d in string.digits if luhn_valid(body + d))
    separator = draw(st.sampled_from(["", " ", "-", "."]))
    return separator.join(number[i : i + 4] for i in range(0, len(number), 4))


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country, bban_length = draw(st.sampled_from([("DE", 18), ("FR", 23), ("NL", 14), ("GB", 18)]))
    bban = "".join(draw(st.sampled_from(string.digits + "ABC")) for _ in range(bban_length))
    number = int("".join(str(int(char, 36)) for char in bban + country + "00"))
    iban = f"{country}{98 - number % 97:02d}{bban}"
    assert iban_valid(iban)
    return (
        " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if draw(st.booleans()) else iban
    )


letters = st.text(
    alphabet=st.characters(whitelist_categories=["Ll", "Lu", "Lo"]), min_size=1, max_size=8
)
emails = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.lists(letters, min_size=1, max_size=3).map(".".join),
    letters,
    st.text(alphabet=st.characters(whitelist_categories=["Ll"]), min_size=2, max_size=6),
)
ssns = st.builds(
    lambda area, group, serial, sep: f"{area:03d}{sep}{group:02d}{sep}{serial:04d}",
    st.integers(1, 665),
    st.integers(1, 99),
    st.integers(1, 9999),
    st.sampled_from(["-", " "]),
)
phones = st.builds(
    lambda cc, rest: f"+{cc} {rest[:3]} {rest[3:6]} {rest[6:]}",
    st.integers(1, 99),
    st.text(alphabet=string.digits, min_size=8, max_size=10),
)
VALUES = {"card": cards(), "iban": ibans(), "email": emails, "ssn": ssns, "phone": phones}
words = st.lists(
    st.text(alphabet=string.ascii_letters + "éü,!?", min_size=1, max_size=10), max_size=6
).map(" ".join)


@fuzz(200)
@given(st.sampled_from(PII_KINDS).flatmap(lambda k: st.tuples(st.just(k), VALUES[k])), words, words)
def test_a_planted_value_is_found_whole(
    kind_value: tuple[str, str], before: str, after: str
) -> None:
    kind, value = kind_value
    text = f"{before} {value} {after}".strip()
    start = text.index(value)
    spans = pii_spans(text)
    assert any(
        s.kind == kind and s.start <= start and start + len(value) <= s.end for s in spans
    ), (text, spans)
    redacted, kinds = redact_pii(text)
    assert value not in redacted and kind in kinds
    # Only the value went: the words around it are all still there.
    assert (
        re.sub(r"\s+", " ", redacted.replace(f"[{kind}]", "")).strip()
        == re.sub(r"\s+", " ", text.replace(value, "")).strip()
    )
