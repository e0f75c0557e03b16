import random
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from mpp.codecs import Rejection
from mpp.config import IngestSettings
from mpp.ids import derive_message_id
from mpp.v1 import events_pb2 as E
from mpp.validation import (
    CAMPAIGN_ID,
    CHANNEL,
    EMAIL,
    LOCALE,
    MESSAGE_ID,
    USER_ID,
    Rules,
    email_spans,
    iban_valid,
    luhn_valid,
    normalize_text,
    pii_spans,
    redact_pii,
    validate_event,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RULES = Rules.from_settings(IngestSettings(max_message_chars=50))


def _event(**fields: object) -> E.RawConversationEvent:
    timestamp = fields.pop("timestamp", NOW - timedelta(minutes=1))
    event = E.RawConversationEvent(**fields)  # type: ignore[arg-type]
    if timestamp is not None:
        assert isinstance(timestamp, datetime)
        event.timestamp.FromDatetime(timestamp)
    return event


def test_normalization() -> None:
    assert normalize_text("  Cafe\u0301\tis\n\nopen\u200b!\x00 ") == "Café is open!"
    # The zero-width joiner holds emoji sequences together and stays.
    assert normalize_text("family 👨\u200d👩\u200d👧") == "family 👨\u200d👩\u200d👧"


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


@pytest.mark.parametrize(
    ("text", "expected", "kinds"),
    [
        ("mail me at jane.doe+x@example.co.uk now", "mail me at [email] now", ["email"]),
        ("card 4111 1111 1111 1111 ok", "card [card] ok", ["card"]),
        ("card 4111-1111-1111-1111", "card [card]", ["card"]),
        ("not a card 4111 1111 1111 1112", "not a card 4111 1111 1111 1112", []),
        ("call +44 20 7946 0958 today", "call [phone] today", ["phone"]),
        ("call (555) 123-4567", "call [phone]", ["phone"]),
        ("order 123456789012 shipped", "order 123456789012 shipped", []),
        ("I paid 25.50 for 3 tickets in 2019", "I paid 25.50 for 3 tickets in 2019", []),
        # SSNs are SSNs, not phone numbers; 9 bare digits only when labelled as one.
        ("my ssn is 078-05-1120.", "my ssn is [ssn].", ["ssn"]),
        ("SSN: 219099999", "SSN: [ssn]", ["ssn"]),
        ("never issued: 666-12-3456 or 078-00-1120", "never issued: [phone] or [phone]", ["phone"]),
        # Bare 10-digit North American numbers, unless an id word comes before.
        ("text me at 2125550143 pls", "text me at [phone] pls", ["phone"]),
        (
            "order 2125550143 and invoice #3105550199",
            "order 2125550143 and invoice #3105550199",
            [],
        ),
        ("timestamp 1700000000", "timestamp 1700000000", []),
        # Cards grouped by dots; a trailing expiry is not part of the number.
        ("card 4111.1111.1111.1111.", "card [card].", ["card"]),
        ("4111 1111 1111 1111 12/27", "[card] 12/27", ["card"]),
        # IBANs, grouped or not, only with a valid checksum and the country's length.
        ("IBAN DE89 3704 0044 0532 0130 00 thanks", "IBAN [iban] thanks", ["iban"]),
        ("gb82west12345698765432", "[iban]", ["iban"]),
        ("DE89 3704 0044 0532 0130 01", "DE89 3704 0044 0532 0130 01", []),
        ("AB12 3456 7890 1234 5678 90", "AB12 3456 7890 1234 5678 90", []),
        # International addresses: Unicode local parts and IDN domains.
        ("é: josé.müller@exämple.de, 用户@例子.广告", "é: [email], [email]", ["email"]),
        ("संपर्क@डाटामेल.भारत or info@xn--bcher-kva.example", "[email] or [email]", ["email"]),
        ("john_doe@example.com", "[email]", ["email"]),
        # Lookalikes that are not PII.
        (
            "build 10.0.19045.3803 at 192.168.100.200",
            "build 10.0.19045.3803 at 192.168.100.200",
            [],
        ),
        ("on 2024-03-15 14:30 paid $1 234 567", "on 2024-03-15 14:30 paid $1 234 567", []),
        ("ups 1Z999AA10123456784, usps 9400 1000 0000 0000 0000 00", None, []),
    ],
)
def test_redaction(text: str, expected: str | None, kinds: list[str]) -> None:
    assert redact_pii(text) == (text if expected is None else expected, kinds)
    # The spans say where each piece was, in the original text.
    assert [span.kind for span in pii_spans(text)] == [
        kind for kind in re.findall(r"\[(\w+)\]", expected or "")
    ]


def test_iban_checksum() -> None:
    assert iban_valid("DE89370400440532013000") and iban_valid("gb82west12345698765432")
    assert not iban_valid("DE89370400440532013001")  # one digit off
    assert not iban_valid("DE8937040044053201300")  # one short for Germany
    assert not iban_valid("ZZ89370400440532013000")  # no such country


def test_valid_event_gets_a_derived_stable_id_independent_of_redaction() -> None:
    event = _event(user_id="u-1", message="  write to a@b.io ", channel="Web", locale="pt-BR")
    out = validate_event(event, RULES, NOW)
    assert out.text == "write to [email]"
    assert list(out.redactions) == ["email"]
    assert out.channel == "web" and out.locale == "pt-BR"
    assert out.message_id_derived
    expected = derive_message_id("u-1", event.timestamp.ToMilliseconds(), "write to a@b.io")
    assert out.message_id == expected
    unredacted = validate_event(event, Rules(**{**RULES.__dict__, "redact": False}), NOW)
    assert unredacted.message_id == out.message_id
    assert unredacted.text == "write to a@b.io"
    # Whitespace differences do not make a new id.
    again = validate_event(
        _event(
            user_id="u-1",
            message="write  to a@b.io",
            timestamp=event.timestamp.ToDatetime(tzinfo=UTC),
        ),
        RULES,
        NOW,
    )
    assert again.message_id == out.message_id


def test_producer_message_id_is_kept() -> None:
    out = validate_event(_event(user_id="u", message="m", message_id="evt-42"), RULES, NOW)
    assert out.message_id == "evt-42" and not out.message_id_derived


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"user_id": " ", "message": "m"}, E.ERROR_CODE_USER_ID_MISSING, "user_id"),
        ({"user_id": "a b", "message": "m"}, E.ERROR_CODE_USER_ID_INVALID, "user_id"),
        ({"user_id": "u", "message": " \t\u200b "}, E.ERROR_CODE_MESSAGE_EMPTY, "message"),
        ({"user_id": "u", "message": "x" * 51}, E.ERROR_CODE_MESSAGE_TOO_LONG, "message"),
        (
            {"user_id": "u", "message": "m", "timestamp": None},
            E.ERROR_CODE_TIMESTAMP_MISSING,
            "timestamp",
        ),
        (
            {"user_id": "u", "message": "m", "timestamp": datetime(1970, 1, 21, tzinfo=UTC)},
            E.ERROR_CODE_TIMESTAMP_TOO_OLD,
            "timestamp",
        ),
        (
            {"user_id": "u", "message": "m", "timestamp": NOW + timedelta(hours=1)},
            E.ERROR_CODE_TIMESTAMP_IN_FUTURE,
            "timestamp",
        ),
        (
            {"user_id": "u", "message": "m", "campaign_id": "no spaces"},
            E.ERROR_CODE_FIELD_INVALID,
            "campaign_id",
        ),
        (
            {"user_id": "u", "message": "m", "channel": "a channel"},
            E.ERROR_CODE_FIELD_INVALID,
            "channel",
        ),
        (
            {"user_id": "u", "message": "m", "locale": "english!"},
            E.ERROR_CODE_FIELD_INVALID,
            "locale",
        ),
        (
            {"user_id": "u", "message": "m", "message_id": "bad id"},
            E.ERROR_CODE_FIELD_INVALID,
            "message_id",
        ),
    ],
)
def test_rejections(fields: dict[str, object], code: int, field: str) -> None:
    with pytest.raises(Rejection) as info:
        validate_event(_event(**fields), RULES, NOW)
    assert (info.value.code, info.value.field) == (code, field)


def test_too_old_detail_suggests_seconds_vs_milliseconds() -> None:
    with pytest.raises(Rejection, match="seconds instead of milliseconds"):
        validate_event(
            _event(user_id="u", message="m", timestamp=datetime(1970, 1, 21, tzinfo=UTC)),
            RULES,
            NOW,
        )


@pytest.mark.parametrize(
    ("field", "good", "bad", "code"),
    [
        ("message_id", "evt-42", "evt-42\n", E.ERROR_CODE_FIELD_INVALID),
        ("campaign_id", "c1", "c1\n", E.ERROR_CODE_FIELD_INVALID),
        ("locale", "en", "en\n", E.ERROR_CODE_FIELD_INVALID),
        ("user_id", "u1", "u1\nu2", E.ERROR_CODE_USER_ID_INVALID),
    ],
)
def test_ids_with_a_newline_are_refused(field: str, good: str, bad: str, code: int) -> None:
    fields: dict[str, object] = {"user_id": "u1", "message": "m"}
    accepted = validate_event(_event(**{**fields, field: good}), RULES, NOW)
    assert getattr(accepted, field) == good
    with pytest.raises(Rejection) as info:
        validate_event(_event(**{**fields, field: bad}), RULES, NOW)
    assert (info.value.code, info.value.field) == (code, field)


def test_the_id_patterns_match_whole_strings() -> None:
    for pattern, good in (
        (USER_ID, "u1"),
        (MESSAGE_ID, "m1"),
        (CAMPAIGN_ID, "c1"),
        (CHANNEL, "web"),
        (LOCALE, "en"),
    ):
        assert pattern.fullmatch(good)
        # re.match would accept these: "$" matches before a final newline.
        assert pattern.match(good + "\n") and not pattern.fullmatch(good + "\n")


def test_user_id_and_channel_are_normalized_not_refused_for_surrounding_whitespace() -> None:
    # Ingest strips the user_id and the channel (both end up without the newline).
    out = validate_event(_event(user_id="u1\n", message="m", channel="Web\n"), RULES, NOW)
    assert (out.user_id, out.channel) == ("u1", "web")


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-1, 0), (-62_135_596_800, 0), (7_258_118_400, 0), (253_402_300_800, 0), (2**62, 0), (5, -1)],
)
def test_protobuf_timestamps_out_of_range_are_invalid(seconds: int, nanos: int) -> None:
    event = E.RawConversationEvent(user_id="u", message="m")
    event.timestamp.seconds, event.timestamp.nanos = seconds, nanos
    with pytest.raises(Rejection) as info:
        validate_event(event, RULES, NOW)
    assert (info.value.code, info.value.field) == (E.ERROR_CODE_TIMESTAMP_INVALID, "timestamp")


def test_email_spans_finds_exactly_what_the_email_pattern_finds() -> None:
    # Includes a match that starts where the previous one ended, inside a run of letters.
    text = "a@b.com.c@d.org x@y@z.io jane.doe+x@example.co.uk @@a@b.cd."
    assert email_spans(text) == [m.span() for m in EMAIL.finditer(text)]
    assert redact_pii("a@b.com.c@d.org") == ("[email][email]", ["email"])
    rng = random.Random(7)
    alphabet = "ab9._%+-@ .@c@-x"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert email_spans(text) == [m.span() for m in EMAIL.finditer(text)], text


# Inputs that make a backtracking engine retry from every character, one per pattern.
ADVERSARIAL = {
    "email: a long local part, no @": "a" * 20_000,
    "email: digits and dots": "1." * 10_000,
    "email: local part then a domain without a dot": "a" * 10_000 + "@" + "b" * 9_999,
    "card: a long digit run": "1" * 20_000,
    "card: digits and single spaces": "1 " * 10_000,
    "phone: digits and dashes": "1-" * 10_000,
    "phone: plus and parentheses": "+1 (2" * 4_000,
    "phone: order numbers": "order 2125550143 " * 1_200,
    "iban: country and check digits": "DE89 " * 4_000,
    "ssn: the label and digits": "ssn 123456789 " * 1_500,
    "email: combining marks": "a\u0301" * 10_000,
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_redaction_grows_linearly_on_adversarial_text(name: str) -> None:
    """Not a benchmark (bench/redaction.py is): a complexity check. 20,000 characters made to
    backtrack must take about as long as 20,000 of ordinary chat with PII in it; a quadratic
    scan takes hundreds of times longer at this size, far beyond the margin given here."""
    ordinary = ("hi, write to jane@example.com or call +44 20 7946 0958 about order 1234. " * 300)[
        :20_000
    ]

    def best(text: str) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            redact_pii(text)
            times.append(time.perf_counter() - started)
        return min(times)

    assert best(ADVERSARIAL[name]) < 20 * best(ordinary) + 0.01


def test_a_text_that_redaction_makes_longer_than_the_limit_is_refused_here() -> None:
    """A placeholder longer than what it replaces ("[email]" for "a@b.cd") would take a text at
    the limit over it, and the embedder dead-letters such a text (found by tests/fuzz)."""
    at_limit = "x" * (RULES.max_message_chars - 7) + " a@b.cd"
    assert validate_event(
        _event(user_id="u", message=at_limit), Rules(**{**RULES.__dict__, "redact": False}), NOW
    )
    with pytest.raises(Rejection) as info:
        validate_event(_event(user_id="u", message=at_limit), RULES, NOW)
    assert (info.value.code, info.value.field) == (E.ERROR_CODE_MESSAGE_TOO_LONG, "message")
    assert "[email]" in info.value.detail
    shorter = validate_event(_event(user_id="u", message=at_limit[1:]), RULES, NOW)
    assert len(shorter.text) == RULES.max_message_chars
