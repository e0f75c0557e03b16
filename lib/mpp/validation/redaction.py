"""PII redaction: find e-mail addresses, IBANs, card numbers, US Social Security numbers and
phone numbers in a text and replace each by its kind (``[email]`` ...), in time linear in the
text (see mpp.validation's docstring for how)."""

from __future__ import annotations

import re
import string
import unicodedata
from typing import NamedTuple


def _mark_ranges() -> str:
    """Combining marks of the Basic Multilingual Plane as a character-class body. ``\\w``
    leaves them out, yet they are part of words in many scripts (the vowel signs of
    Devanagari, Thai or Tamil; Hebrew and Arabic points), so of e-mail addresses in them."""
    ranges: list[str] = []
    first = None
    for point in range(0x10001):
        is_mark = point < 0x10000 and unicodedata.category(chr(point)).startswith("M")
        if is_mark and first is None:
            first = point
        elif not is_mark and first is not None:
            ranges.append(f"\\u{first:04x}-\\u{point - 1:04x}")
            first = None
    return "".join(ranges)


_MARKS = _mark_ranges()

# E-mail addresses, international ones included: the local part is letters and digits of any
# script (with their combining marks) and ._%+- ; the domain is labels of the same (IDN: a
# Unicode domain, or its xn-- form) ending in a top-level domain of two letters or more, or an
# xn-- one. ``EMAIL.sub`` alone would retry the unbounded local part from every character of a
# long run of local characters, quadratic in the run's length; email_spans finds the same
# matches in linear time.
_EMAIL_LOCAL = rf"[\w.%+\-{_MARKS}]"
_LABEL = rf"[\w\-{_MARKS}]+"
_TLD = rf"(?:[xX][nN]--[A-Za-z0-9\-]+|(?:[^\W\d_]|[{_MARKS}]){{2,}})"
EMAIL = re.compile(rf"{_EMAIL_LOCAL}+@{_LABEL}(?:\.{_LABEL})*\.{_TLD}")
# The same, starting only where a run of local characters starts.
_EMAIL_AT_RUN_START = re.compile(f"(?<!{_EMAIL_LOCAL}){EMAIL.pattern}")

# IBAN: a country code, two check digits and the country's number of letters and digits, in
# one block or in groups separated by single spaces. ibans_spans checks the length and the
# ISO 13616 mod-97 checksum, which a random string passes once in 97.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27,
    "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
# Not after a letter; after a digit, yes: a card number glued before it ("...1111DE89...") is
# redacted too, and "[card]DE89..." must not hold an IBAN found only the second time.
_IBAN_START = re.compile(r"(?<![^\W\d_])([A-Za-z]{2})(\d{2})")
# The rest of an IBAN of n characters after its first four, whole: not followed by a digit.
# A space is taken only before a letter or digit, so no input makes this backtrack. The
# boundaries mirror each other (no letter before, no digit after) so that two IBANs glued
# together are both found the first time, not one of them only when the other is redacted.
_IBAN_REST = {
    n - 4: re.compile(rf"(?: ?[A-Za-z0-9]){{{n - 4}}}(?!\d)") for n in set(IBAN_LENGTHS.values())
}

# Card numbers: 13 to 19 digits passing the Luhn check, in one block or grouped by spaces,
# dashes or dots. A candidate is a whole run of digits and single separators (not part of a
# longer one); card_spans also tries it without its last group (an expiry date or a count
# written after the number).
CARD_CANDIDATE = re.compile(r"(?<![\d\-.])(?<!\d )\d(?:[ .\-]?\d)*")
_CARD_GROUPS = re.compile(r"[ .\-]")
_MAX_CARD_CHARS = 19 * 2

# US Social Security numbers: 3-2-4 digits grouped by dashes or spaces (the same separator
# twice), or 9 digits right after the words "SSN" or "social security number". Numbers the
# SSA never issues (area 000, 666 or 900-999, group 00, serial 0000) are not redacted as SSNs.
SSN = re.compile(r"(?<![\w+\-.])(?<!\d[ .\-])\d{3}([ \-])\d{2}\1\d{4}(?![ .\-]?\d)(?!\w)")
SSN_LABELLED = re.compile(
    r"(?i:\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|num|#))?)\s*(?:is\s+|[:#=]\s*)?)"
    r"(\d{9})(?!\w)"
)

# International (+CC ...) or national numbers with 9 to 15 digits, separators allowed, or a
# bare 10-digit North American number. The lookarounds keep it from matching part of a
# longer digit sequence (a number starting with a digit may not follow a digit and a separator,
# nor a word and a dash: "INV-2024-000123"), and mirror each other: a number that may not start
# right after a digit may not end right before a "+" or "(" and a digit (the second of two glued
# numbers would otherwise be found only once the first is redacted). phone_spans then refuses
# what looks like a date, an IP address, a version, a price or an order/tracking number.
PHONE = re.compile(
    r"(?<![\w+])"
    r"(?:\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?|\(\d{1,4}\)[ .\-]?|(?<!\d[ .\-(])(?<!\w-))"
    r"\d(?:[ .\-]?\d){6,13}(?![ .\-]?\d)(?!\w)(?![+(]\d)"
)
_NANP = re.compile(r"[2-9]\d\d[2-9]\d{6}")
# The word right before a number that makes it an id, not a phone number ("order 2125550143",
# "tracking no. ...", "invoice #..."), after dropping the words in _FILLERS; and currencies.
_ID_WORDS = frozenset(
    {"order", "invoice", "tracking", "parcel", "shipment", "package", "ticket", "ref",
     "reference", "confirmation", "booking", "reservation", "account", "acct", "customer",
     "member", "policy", "case", "serial", "transaction", "txn", "id", "sku", "isbn",
     "receipt", "claim", "po", "barcode", "ean", "upc", "gtin", "product", "item", "article"}
)  # fmt: skip
_FILLERS = frozenset(
    {"number", "num", "no", "no.", "nr", "nr.", "n°", "code", "is", "was", ":", "#", "="}
)
_CURRENCIES = frozenset({"usd", "eur", "gbp", "chf", "jpy", "inr", "cad", "aud"})
_DATE_START = re.compile(r"(?:19|20)\d\d[ .\-](?:0?[1-9]|1[0-2])[ .\-]")
_DATE_IN = re.compile(
    r"(?<!\d)(?:0?[1-9]|[12]\d|3[01])[.\-](?:0?[1-9]|1[0-2])[.\-](?:19|20)\d\d(?!\d)"
)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_GROUP_SPLIT = re.compile(r"[ .\-]")
_DIGIT = re.compile(r"\d")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


_IBAN_LETTER_VALUES = {
    ord(letter): str(value) for value, letter in enumerate(string.ascii_uppercase, 10)
}


def iban_valid(iban: str) -> bool:
    """ISO 13616: letters and digits only, the country's length, and the four first characters
    moved to the end, read as a number with A=10 ... Z=35, leave 1 modulo 97."""
    iban = iban.upper()
    if not iban.isascii() or not iban.isalnum() or IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    return int((iban[4:] + iban[:4]).translate(_IBAN_LETTER_VALUES)) % 97 == 1


class PiiSpan(NamedTuple):
    """A piece of PII in a text: ``text[start:end]`` is of the kind ``kind``."""

    start: int
    end: int
    kind: str


PII_KINDS = ("email", "iban", "card", "ssn", "phone")


def email_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) of each match that ``EMAIL.finditer`` gives, in time linear in the text.

    A match's local part cannot contain an ``@`` and runs up to the match's ``@``, so whether a
    start succeeds depends only on the run of local characters it is in: trying the first
    character of each run is enough (``_EMAIL_AT_RUN_START``). The one other start that
    ``finditer`` tries is the end of the previous match, which may lie inside a run
    (``a@b.com.c@d.org``): that one is tried with ``EMAIL.match`` before searching further.
    """
    spans: list[tuple[int, int]] = []
    found = _EMAIL_AT_RUN_START.search(text)
    while found is not None:
        spans.append(found.span())
        found = EMAIL.match(text, found.end()) or _EMAIL_AT_RUN_START.search(text, found.end())
    return spans


def iban_spans(text: str) -> list[tuple[int, int]]:
    """IBANs passing the length and mod-97 checks. Each start is tried once and reads at most
    the 34 characters (and 33 spaces) an IBAN can have: linear in the text."""
    spans: list[tuple[int, int]] = []
    found = _IBAN_START.search(text)
    while found is not None:
        length = IBAN_LENGTHS.get(found.group(1).upper())
        rest = _IBAN_REST[length - 4].match(text, found.end()) if length else None
        if rest is not None and iban_valid(found.group(0) + rest.group(0).replace(" ", "")):
            spans.append((found.start(), rest.end()))
            found = _IBAN_START.search(text, rest.end())
        else:
            found = _IBAN_START.search(text, found.end())
    return spans


def _card_digits(candidate: str) -> bool:
    digits = _CARD_GROUPS.sub("", candidate)
    # Every major network's numbers start with 2 to 6 (Mastercard, Amex, Visa, Discover,
    # UnionPay...): the others are more often ids, binary or digits typed at random.
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)


def card_spans(text: str) -> list[tuple[int, int]]:
    """Card numbers (13 to 19 digits passing the Luhn check): a whole run of digits and single
    separators; or that run without its last group when that group follows a space (an
    expiry or a count written after the number), the last group too when it is a card itself.
    Not found: two numbers in groups of four written one after the other with only a space
    between (one run of 32 digits)."""
    spans: list[tuple[int, int]] = []
    for found in CARD_CANDIDATE.finditer(text):
        candidate, start = found.group(0), found.start()
        if not 13 <= len(candidate) <= _MAX_CARD_CHARS + 5:  # too short, or too long even
            continue  # without its last group
        if _card_digits(candidate):
            if not (candidate.isdigit() and _after_id_word(text, start)):
                spans.append(found.span())
            continue
        cut = candidate.rfind(" ")
        head, tail = candidate[:cut], candidate[cut + 1 :]
        if cut > 0 and _card_digits(head) and not (head.isdigit() and _after_id_word(text, start)):
            spans.append((start, start + cut))
            # Redacting the head leaves the tail alone in its run: found now, not next time.
            if _card_digits(tail):
                spans.append((start + cut + 1, found.end()))
    return spans


def _ssn_issuable(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def ssn_spans(text: str) -> list[tuple[int, int]]:
    """US Social Security numbers: 3-2-4 digits, or 9 digits labelled as an SSN."""
    spans = [m.span() for m in SSN.finditer(text) if _ssn_issuable(re.sub(r"\D", "", m[0]))]
    spans += [m.span(1) for m in SSN_LABELLED.finditer(text) if _ssn_issuable(m[1])]
    return sorted(spans)


def _after_id_word(text: str, at: int, currency: bool = False) -> bool:
    """Whether ``text`` has an id word (and fillers), or a currency, right before ``at``: a
    bare run of digits after it is a barcode or an order number ("EAN 4006381333931")."""
    words = text[max(0, at - 40) : at].lower().replace("#", " # ").replace(":", " : ").split()[-4:]
    if not words:
        return False
    if currency and (words[-1][-1] in "$€£¥₹" or words[-1] in _CURRENCIES):
        return True
    while words and words[-1] in _FILLERS:
        words.pop()
    return bool(words) and words[-1].strip(".,;") in _ID_WORDS


def _looks_like_phone(text: str, found: re.Match[str]) -> bool:
    number = found.group(0)
    digits = re.sub(r"\D", "", number)
    if not 9 <= len(digits) <= 15:
        return False
    if number.startswith(("+", "(")):  # a country code or an area code in parentheses
        return True
    if _after_id_word(text, found.start(), currency=True):
        return False
    if number.isdigit():
        # A bare run of digits is more often an id or an amount; a North American number
        # (area code and exchange starting 2-9) is the exception.
        return _NANP.fullmatch(number) is not None
    if _DATE_START.match(number) or _DATE_IN.search(number) or _IPV4.fullmatch(number):
        return False
    groups = _GROUP_SPLIT.split(number)
    if len(groups) == 2 and "." in number:  # a decimal: 0.0000000013
        return False
    if [len(group) for group in groups] == [5, 4] and "-" in number:  # a ZIP+4 code
        return False
    if any(len(group) == 1 for group in groups[1:]):  # a version: 10.0.19045.3803
        return False
    if [len(group) for group in groups] == [3, 3, 3]:
        # Spanish and Polish numbers are written so; theirs start with 5 to 9.
        return number[0] in "56789"
    # Thousands: 1.234.567.890 or 1 234 567 890.
    thousands = all(len(group) == 3 for group in groups[1:])
    return not (thousands and ("." in number or len(groups[0]) < 3))


def phone_spans(text: str) -> list[tuple[int, int]]:
    """Phone numbers: ``PHONE`` matches that do not look like an id, a date, an IP address,
    a version or an amount."""
    return [found.span() for found in PHONE.finditer(text) if _looks_like_phone(text, found)]


_FINDERS = (
    ("email", email_spans),
    ("iban", iban_spans),
    ("card", card_spans),
    ("ssn", ssn_spans),
    ("phone", phone_spans),
)


def pii_spans(text: str) -> list[PiiSpan]:
    """Every piece of PII in ``text``, in order, none overlapping, in time linear in the text.

    The kinds are looked for one after the other (e-mail, IBAN, card, SSN, phone), each in the
    text with what the earlier ones found masked, so that a card's digits are never also a
    phone number and an IBAN's never a card."""
    spans: list[PiiSpan] = []
    masked = text
    has_at, has_digit = "@" in text, _DIGIT.search(text) is not None
    for kind, finder in _FINDERS:
        # Every kind but e-mail needs a digit, and e-mail an "@": most chat has neither.
        if not (has_at if kind == "email" else has_digit):
            continue
        found = finder(masked)
        if not found:
            continue
        spans += [PiiSpan(start, end, kind) for start, end in found]
        if kind == _FINDERS[-1][0]:
            break  # no later kind to mask it for
        pieces: list[str] = []
        done = 0
        for start, end in found:
            pieces += [masked[done:start], "\x00" * (end - start)]
            done = end
        masked = "".join([*pieces, masked[done:]])
    return sorted(spans)


def redact_pii(text: str) -> tuple[str, list[str]]:
    """Replace each piece of PII by its kind in brackets (``[email]``, ``[iban]``, ``[card]``,
    ``[ssn]``, ``[phone]``); returns the text and the kinds found, in that order. Redacting
    the result again changes nothing."""
    spans = pii_spans(text)
    parts: list[str] = []
    done = 0
    for start, end, kind in spans:
        parts += [text[done:start], f"[{kind}]"]
        done = end
    found = {span.kind for span in spans}
    return "".join([*parts, text[done:]]), [kind for kind in PII_KINDS if kind in found]
