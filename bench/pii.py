"""PII redaction measured on a labelled set: recall per class and false positives.

    .venv/bin/python bench/pii.py            # the table, on tests/data/pii_labelled.jsonl
    .venv/bin/python bench/pii.py --write    # rebuild that file (fixed seed), then the table

No server. Each line of the set is a message and the PII in it, as character spans with a
kind (``email``, ``iban``, ``card``, ``ssn``, ``phone``); ``source`` says where it comes from:
- ``template``: chat sentences with a generated value of one kind (or two) in them, each value
  written the ways people write it (grouped, bare, dotted, with a country code...);
- ``lookalike``: messages with no PII but numbers that look like it: order, invoice and tracking
  numbers, dates and times, prices, versions, IP addresses, ISBNs, EANs, ZIP+4 codes, IBAN- and
  card-shaped strings whose checksum fails;
- ``hand``: messages written by hand, PII and lookalikes mixed, before the first measure;
- ``chitchat``: real chat messages with digits in them (chitchat-dataset, the samples the
  demo replays), labelled by hand where they hold PII.
The expected spans come from where the generator put each value (or from the hand labels),
never from the redactor.

An expected span is found when ``mpp.validation.pii_spans`` returns a span of the same kind
that covers it. A false positive is a returned span that overlaps no expected span of its
kind. The test tests/unit/test_pii_recall.py asserts the figures that docs/security.md gives.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mpp.validation import PII_KINDS, iban_valid, luhn_valid, normalize_text, pii_spans

SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "pii_labelled.jsonl"
SEED = 14

Span = tuple[int, int, str]


# --- values, written the ways people write them ---------------------------------------------

FIRST = ["jane", "john", "maria", "li", "ahmed", "olga", "pierre", "sam", "priya", "kenji"]
LAST = ["doe", "smith", "garcia", "wang", "hassan", "ivanova", "martin", "lee", "patel", "sato"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk", "example.io", "uni.edu"]
INTERNATIONAL_EMAILS = [
    "josé.garcía@correo.es",
    "müller@beispiel.de",
    "用户@例子.广告",
    "почта@пример.рф",
    "θέμα@παράδειγμα.ελ",
    "संपर्क@डाटामेल.भारत",
    "info@münchen.de",
    "françois@société.fr",
    "info@xn--mnchen-3ya.de",
    "山田@会社.jp",
    "ñoño@empresa.com.mx",
    "zoë.van.dijk@voorbeeld.nl",
    "δοκιμή@example.com",
    "support@xn--80ak6aa92e.com",
    "ayşe.y\u0131lmaz@örnek.com.tr",
]


def email(rng: random.Random) -> str:
    if rng.random() < 0.35:
        return rng.choice(INTERNATIONAL_EMAILS)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice(
        [f"{first}.{last}", f"{first}_{last}", f"{first}{rng.randint(1, 99)}", f"{first}+news"]
    )
    address = f"{local}@{rng.choice(DOMAINS)}"
    return address.upper() if rng.random() < 0.05 else address


# Country: (length, BBAN shape: "n" a digit, "a" an upper-case letter, "c" either).
IBAN_SHAPES = {
    "DE": "n" * 18,
    "GB": "aaaa" + "n" * 14,
    "FR": "n" * 21 + "nn",
    "NL": "aaaa" + "n" * 10,
    "ES": "n" * 20,
    "IT": "a" + "n" * 22,
    "BE": "n" * 12,
    "CH": "n" * 17,
    "AT": "n" * 16,
    "PL": "n" * 24,
    "PT": "n" * 21,
    "IE": "aaaa" + "n" * 14,
    "SE": "n" * 20,
    "NO": "n" * 11,
    "MT": "aaaa" + "n" * 5 + "c" * 18,
}


def _char(rng: random.Random, shape: str) -> str:
    digits, letters = "0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return rng.choice({"n": digits, "a": letters, "c": digits + letters}[shape])


def _check_digits(country: str, bban: str) -> str:
    number = int("".join(str(int(char, 36)) for char in bban + country + "00"))
    return f"{98 - number % 97:02d}"


def iban_compact(rng: random.Random, valid: bool = True) -> str:
    country = rng.choice(sorted(IBAN_SHAPES))
    bban = "".join(_char(rng, shape) for shape in IBAN_SHAPES[country])
    check = _check_digits(country, bban)
    if not valid:  # the same with its check digits off by one to 96
        check = f"{(int(check) + rng.randint(1, 95)) % 97 + 1:02d}"
        check = check if check != _check_digits(country, bban) else "01"
    return country + check + bban


def iban(rng: random.Random) -> str:
    compact = iban_compact(rng)
    assert iban_valid(compact)
    style = rng.random()
    if style < 0.6:  # the print format: groups of four
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact.lower() if style < 0.65 else compact


CARD_PREFIXES = [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15)]
CARD_PREFIXES += [("6011", 16), ("62", 19), ("4", 13), ("36", 14)]


def card_digits(rng: random.Random, valid: bool = True, length: int = 0) -> str:
    prefix, usual = rng.choice([p for p in CARD_PREFIXES if p[1] == length or not length])
    length = length or usual
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    for last in "0123456789":
        if luhn_valid(body + last) == valid:
            return body + last
    raise AssertionError("unreachable")


def card(rng: random.Random) -> str:
    digits = card_digits(rng)
    if len(digits) == 15:  # Amex: 4-6-5
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return rng.choice([" ", " ", "-", ".", ""]).join(groups)


def ssn_digits(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"


def ssn(rng: random.Random) -> str:
    digits = ssn_digits(rng)
    separator = rng.choice(["-", "-", "-", " "])
    return separator.join([digits[:3], digits[3:5], digits[5:]])


def _digits(rng: random.Random, count: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(count - 1))


def phone(rng: random.Random) -> str:
    a, e, line = _digits(rng, 3, "23456789"), _digits(rng, 3, "23456789"), _digits(rng, 4)
    formats: list[Callable[[], str]] = [
        lambda: f"({a}) {e}-{line}",
        lambda: f"{a}-{e}-{line}",
        lambda: f"{a}.{e}.{line}",
        lambda: f"{a}{e}{line}",
        lambda: f"+1 {a} {e} {line}",
        lambda: f"+1-{a}-{e}-{line}",
        lambda: f"1-{a}-{e}-{line}",
        lambda: f"+44 20 {_digits(rng, 4)} {_digits(rng, 4)}",
        lambda: f"020 {_digits(rng, 4, '3789')} {_digits(rng, 4)}",
        lambda: f"07{_digits(rng, 3)} {_digits(rng, 6)}",
        lambda: "0" + rng.choice("1234567") + "".join(f" {_digits(rng, 2)}" for _ in range(4)),
        lambda: "+33 6" + "".join(f" {_digits(rng, 2)}" for _ in range(4)),
        lambda: "0" + rng.choice("1234") + "".join(f".{_digits(rng, 2)}" for _ in range(4)),
        lambda: f"+49 30 {_digits(rng, 8)}",
        lambda: f"0151 {_digits(rng, 8)}",
        lambda: f"6{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",
        lambda: f"+34 6{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",
        lambda: f"+91 9{_digits(rng, 4)} {_digits(rng, 5)}",
        lambda: f"+55 11 9{_digits(rng, 4)}-{_digits(rng, 4)}",
        lambda: f"04{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",
        lambda: f"+61 4{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",
    ]
    return rng.choice(formats)()


VALUES: dict[str, Callable[[random.Random], str]] = {
    "email": email,
    "iban": iban,
    "card": card,
    "ssn": ssn,
    "phone": phone,
}

TEMPLATES = {
    "email": [
        "my email is {}",
        "send it to {} please",
        "you can reach me at {}.",
        "{} is my work address",
        "contact: {}",
        "I changed my address to {}, the old one is dead",
        "email me ({}) when the order ships",
        "cc {} on the invoice thx",
    ],
    "iban": [
        "my IBAN is {}",
        "please refund to {} thanks",
        "bank details: {}",
        "IBAN: {}, BIC DEUTDEFF",
        "wire it to {} by friday",
        "the account is {}.",
        "can you pay into {}?",
    ],
    "card": [
        "my card number is {}",
        "card {} exp 09/27",
        "charge {} please",
        "use the visa ending... actually the whole number is {}",
        "{} was declined again",
        "I paid with {}.",
        "card: {}, cvv 123",
    ],
    "ssn": [
        "my ssn is {}",
        "SSN {} for the application",
        "social security number: {}",
        "they asked for my social {} on the form",
        "here is the SSN you needed: {}.",
        "employee SSN {}, start date 2024-03-01",
    ],
    "phone": [
        "call me at {}",
        "my number is {}",
        "text me on {} after 6",
        "whatsapp: {}",
        "tel {}",
        "{} is my cell",
        "you can ring {} tomorrow",
        "my new phone number: {}.",
        "reach me at {} or by mail",
    ],
}

# Labelled SSNs written as 9 bare digits.
LABELLED_BARE_SSN = ["SSN {}", "ssn: {}", "social security number {}", "my SSN is {}"]

LOOKALIKES = [
    "order #{order} has shipped",
    "order {nanp} was cancelled, the refund takes 5-7 days",
    "invoice #{nanp} is attached",
    "my order number is {order}, where is it?",
    "tracking number {track12}",
    "tracking 1Z{ups} from UPS",
    "USPS tracking {usps}",
    "DHL: JD01460000{d10}",
    "your confirmation code is {nanp}",
    "booking ref {order}",
    "ticket {nanp} was escalated",
    "customer id: {nanp}",
    "the meeting is on {date} at {time}",
    "we met on {dmy} at {time}",
    "it happened {date} {time}:00 UTC",
    "born {dmy}",
    "it costs ${thousands}.99",
    "the house sold for $1 {d3} {d3} {d3}",
    "price: € {d2} {d3} {d3}",
    "they raised EUR 2 {d3} {d3} {d3}",
    "the budget is 1.{d3}.{d3}.{d3} euros",
    "we reached 1 {d3} {d3} {d3} users",
    "upgrade to version 10.0.{d5}.{d4}",
    "Chrome 120.0.{d4}.{d3} crashes",
    "build {date8}.{d1} is out",
    "python 3.11.{d1} and numpy 1.26.{d1}",
    "server at 192.168.{d3ip}.{d3ip}",
    "ping 10.{d3ip}.{d3ip}.{d3ip} timed out",
    "ISBN 978-{d1}-{d2}-{d6}-{d1}",
    "ISBN 0-{d3}-{d5}-{d1}",
    "product code {ean}",
    "barcode {ean} on the box",
    "ship to 123 Main St, Springfield IL {zip4}",
    "pages {d3}-{d3} of the report",
    "the score was 3-2 after {d2} minutes",
    "I was {d2} in 1999 and it was {d2}:{d2} when we left",
    "coordinates {lat}, {lon}",
    "gift card code {bad_card}",
    "not my card: {bad_card}",
    "iban {bad_iban} does not work",
    "ref {bad_iban}",
    "commit {sha} fixed it",
    "id {uuid}",
    "room {d4}, floor {d2}, building {d1}",
    "flight BA {d4} leaves at {time}",
    "I ran {d2}.{d2} km in {d2}:{d2}",
    "policy number {d9}",
    "population {d1} {d3} {d3}",
    "reference INV-2024-{d6}",
    "PO {po} approved",
    "serial SN-{d5}-{d4}-{d2}",
    "timestamp {unix}",
    "it took 0.{d10} seconds",
    "account {d8}, sort code {d2}-{d2}-{d2}",
]


def _lookalike_fields(rng: random.Random) -> dict[str, str]:
    def d(count: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(count))

    year, month, day = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
    sha = "".join(rng.choice("0123456789abcdef") for _ in range(7))
    uuid = "-".join("".join(rng.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4))
    bad_card = card_digits(rng, valid=False, length=16)
    return {
        "order": d(rng.randint(6, 12)),
        "nanp": _digits(rng, 3, "23456789") + _digits(rng, 3, "23456789") + d(4),
        "track12": d(12),
        "ups": "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTVWXYZ") for _ in range(16)),
        "usps": " ".join(["9400", d(4), d(4), d(4), d(4), d(2)]),
        "date": f"{year}-{month:02d}-{day:02d}",
        "date8": f"{year}{month:02d}{day:02d}",
        "dmy": f"{day:02d}.{month:02d}.{year}",
        "time": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        "thousands": f"{rng.randint(1, 999)},{d(3)}",
        "ean": "40" + d(11),
        "zip4": f"{d(5)}-{d(4)}",
        "lat": f"{rng.uniform(-80, 80):.6f}",
        "lon": f"{rng.uniform(-170, 170):.6f}",
        "bad_card": " ".join(bad_card[i : i + 4] for i in range(0, 16, 4)),
        "bad_iban": iban_compact(rng, valid=False),
        "sha": sha,
        "uuid": uuid + "-" + d(4) + "-" + d(12),
        "po": "45" + d(8),
        "unix": "1" + d(9),
        "d1": d(1),
        "d2": d(2),
        "d3": d(3),
        "d3ip": str(rng.randint(0, 255)),
        "d4": d(4),
        "d5": d(5),
        "d6": d(6),
        "d8": d(8),
        "d9": d(9),
        "d10": d(10),
    }


# Real chat messages with PII in them (chitchat-dataset), labelled by hand: the text, then the
# PII substrings with their kinds.
CHITCHAT_PII = {
    "(808) 782-1557": [("(808) 782-1557", "phone")],
    "natalie.ccc.byu@gmail.com": [("natalie.ccc.byu@gmail.com", "email")],
    "chitchat@byu.edu": [("chitchat@byu.edu", "email")],
}


# Written by hand before they were first measured (and kept as written): ⟦kind|value⟧ marks
# the PII.
HAND = [
    "hey its me, new number ⟦phone|917-555-0199⟧ save it",
    "Pls send the contract to ⟦email|m.rossi@studiolegale.it⟧ and ⟦email|legal@studiolegale.it⟧",
    "my cell is ⟦phone|(646) 555-0123⟧, office ⟦phone|+1 212 555 0187⟧ ext 4",
    "ring me: ⟦phone|07911 123456⟧",
    "appelle-moi au ⟦phone|06 45 78 12 90⟧ stp",
    "mein Handy: ⟦phone|+49 171 2345678⟧",
    "meu whatsapp é ⟦phone|+55 21 98765-4321⟧",
    "llámame al ⟦phone|655 123 987⟧",
    "number's ⟦phone|4155550132⟧ call after 5",
    "fax ⟦phone|+33 1 42 68 53 00⟧",
    "SSN ⟦ssn|512-44-8823⟧ DOB 04/12/1988",
    "my social is ⟦ssn|321 54 9876⟧",
    "ss# ⟦ssn|078-05-1120⟧",
    "refund IBAN ⟦iban|FR14 2004 1010 0505 0001 3M02 606⟧",
    "IBAN ⟦iban|NL91ABNA0417164300⟧ t.n.v. J. de Vries",
    "my bank: ⟦iban|ES91 2100 0418 4502 0005 1332⟧",
    "pay to ⟦iban|GB29 NWBK 6016 1331 9268 19⟧ ref INV-3321",
    "⟦iban|CH9300762011623852957⟧ is my swiss account",
    "card ⟦card|5555 5555 5555 4444⟧ cvc 321",
    "amex ⟦card|3782 822463 10005⟧ exp 11/26",
    "⟦card|4012888888881881⟧ keeps getting declined",
    "discover ⟦card|6011-1111-1111-1117⟧",
    "the card ⟦card|4000.0566.5566.5556⟧ is the debit one",
    "email ⟦email|Jürgen.Groß@bücher.de⟧ bitte",
    "email: ⟦email|o.connor@example.ie⟧",
    "write to ⟦email|müşteri@şirket.com.tr⟧",
    "⟦email|佐藤@例え.テスト⟧ is my japanese address",
    "contact ⟦email|info@xn--brgerbro-75a.de⟧",
    "hi!! my email is ⟦email|Tina_Marie.Lopez99@yahoo.com⟧ :)",
    "both: ⟦email|a.b@c.io⟧ / ⟦phone|+44 7700 900982⟧",
    "order #847261 arrived broken",
    "my order number is 3125550143 not 3125550144",
    "tracking 1Z12345E0205271688",
    "your parcel 00340434161234567890 is on its way",
    "call center hours 9-17, Mon-Fri",
    "meeting moved to 2025-01-15 09:30",
    "deadline 31.12.2024 23:59",
    "we shipped 1,250,000 units in Q3",
    "the new iPhone costs $1,199",
    "firmware 2.4.1.1203 fixed the bluetooth bug",
    "connect to 172.16.254.100 port 8080",
    "ISBN 978-0-306-40615-7",
    "EAN 5901234123457",
    "zip code 02134-1725",
    "I'm 34, my wife is 32 and we have 3 kids",
    "score 102-98 in overtime",
    "my lucky numbers are 4 8 15 16 23 42",
    "the wifi password is 7734 2291",
    "invoice no. 2024000123 due 30 days",
    "case 2125550100 has been closed",
    "I paid €49.99 for 2 months",
    "version 1.2.3-beta.4",
    "it's 2300 miles from here",
    "my student id is 900123456",
    "call 911 if it's an emergency",
    "route 66, exit 123",
    "UTC+05:30 is india time",
    "temperature was -3.5 to 12.8 degrees",
    "lat 51.5074 lon -0.1278",
    "2 + 2 = 4 and 10 - 3 = 7",
    "the code is 482913",
]
_MARKUP = re.compile(r"⟦(\w+)\|([^⟧]+)⟧")


def _hand_line(marked: str) -> dict[str, Any]:
    pieces = [(m[2], m[1]) for m in _MARKUP.finditer(marked)]
    return _line(_MARKUP.sub(lambda m: m[2], marked), pieces, "hand")


def _line(text: str, pieces: list[tuple[str, str]], source: str) -> dict[str, Any]:
    spans = []
    at = 0
    for piece, kind in pieces:
        start = text.index(piece, at)
        spans.append({"start": start, "end": start + len(piece), "kind": kind})
        at = start + len(piece)
    return {"text": text, "spans": spans, "source": source}


def _chitchat(rng: random.Random, count: int) -> Iterator[dict[str, Any]]:
    from mpp.samples import chitchat_events

    with_digits = sorted(
        {
            normalize_text(event["message"])
            for event in chitchat_events()
            if re.search(r"\d{2}", event["message"])
        }
    )
    chosen = rng.sample(with_digits, count)
    chosen += [text for text in sorted(CHITCHAT_PII) if text not in chosen]
    for text in chosen:
        pieces = CHITCHAT_PII.get(text, [])
        yield _line(text, pieces, "chitchat")


def build(seed: int = SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    lines: list[dict[str, Any]] = []
    for kind, templates in TEMPLATES.items():
        for _ in range(60):
            value = VALUES[kind](rng)
            lines.append(_line(rng.choice(templates).format(value), [(value, kind)], "template"))
    for _ in range(20):
        value = ssn_digits(rng)
        lines.append(
            _line(rng.choice(LABELLED_BARE_SSN).format(value), [(value, "ssn")], "template")
        )
    for _ in range(40):  # two kinds in one message
        first, second = rng.sample(list(VALUES), 2)
        a, b = VALUES[first](rng), VALUES[second](rng)
        one, other = rng.choice(TEMPLATES[first]), rng.choice(TEMPLATES[second])
        text = f"{one.format(a)}, and {other.format(b)}"
        lines.append(_line(text, [(a, first), (b, second)], "template"))
    for _ in range(3):
        for template in LOOKALIKES:
            lines.append(_line(template.format(**_lookalike_fields(rng)), [], "lookalike"))
    lines += [_hand_line(marked) for marked in HAND]
    lines += _chitchat(rng, 150)
    return lines


# --- measuring ------------------------------------------------------------------------------


def load(path: Path = SET) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def score(lines: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per kind: expected, found, recall, predicted, false_positives, fp_rate (false positives
    over predicted); and "negative lines": lines without PII, how many got any span."""
    table = {
        kind: {"expected": 0, "found": 0, "predicted": 0, "false_positives": 0}
        for kind in PII_KINDS
    }
    negatives = flagged_negatives = 0
    for line in lines:
        expected: list[Span] = [(s["start"], s["end"], s["kind"]) for s in line["spans"]]
        predicted = pii_spans(line["text"])
        for start, end, kind in expected:
            table[kind]["expected"] += 1
            if any(p.kind == kind and p.start <= start and end <= p.end for p in predicted):
                table[kind]["found"] += 1
        for p in predicted:
            table[p.kind]["predicted"] += 1
            if not any(k == p.kind and s < p.end and p.start < e for s, e, k in expected):
                table[p.kind]["false_positives"] += 1
        if not expected:
            negatives += 1
            flagged_negatives += bool(predicted)
    result: dict[str, dict[str, float]] = {}
    for kind, row in table.items():
        result[kind] = {
            **row,
            "recall": row["found"] / row["expected"] if row["expected"] else 1.0,
            "fp_rate": row["false_positives"] / row["predicted"] if row["predicted"] else 0.0,
        }
    result["negative lines"] = {
        "lines": negatives,
        "flagged": flagged_negatives,
        "rate": flagged_negatives / negatives if negatives else 0.0,
    }
    return result


def misses(lines: list[dict[str, Any]]) -> Iterator[str]:
    """Each expected span not found and each false positive, for reading."""
    for line in lines:
        predicted = pii_spans(line["text"])
        for s in line["spans"]:
            if not any(
                p.kind == s["kind"] and p.start <= s["start"] and s["end"] <= p.end
                for p in predicted
            ):
                piece = line["text"][s["start"] : s["end"]]
                yield f"missed {s['kind']}: {piece!r} in {line['text']!r}"
        for p in predicted:
            if not any(
                s["kind"] == p.kind and s["start"] < p.end and p.start < s["end"]
                for s in line["spans"]
            ):
                yield f"false {p.kind}: {line['text'][p.start : p.end]!r} in {line['text']!r}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rebuild {SET.name} first")
    parser.add_argument("--misses", action="store_true", help="list each miss and false hit")
    args = parser.parse_args()
    if args.write:
        SET.parent.mkdir(parents=True, exist_ok=True)
        lines = build()
        SET.write_text(
            "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines),
            encoding="utf-8",
        )
    lines = load()
    table = score(lines)
    negative = table.pop("negative lines")
    print(f"{len(lines)} lines ({SET.name}), {negative['lines']:.0f} of them without PII")
    print(f"{'kind':6} {'expected':>8} {'found':>6} {'recall':>7} {'predicted':>9} "
          f"{'false +':>7} {'fp rate':>7}")  # fmt: skip
    for kind, row in table.items():
        print(
            f"{kind:6} {row['expected']:8.0f} {row['found']:6.0f} {row['recall']:7.3f} "
            f"{row['predicted']:9.0f} {row['false_positives']:7.0f} {row['fp_rate']:7.3f}"
        )
    print(
        f"lines without PII that got a redaction: {negative['flagged']:.0f} of "
        f"{negative['lines']:.0f} ({negative['rate']:.1%})"
    )
    print()
    print(f"{'source':10} {'lines':>5} {'PII':>4} {'found':>5} {'no PII':>6} {'flagged':>7}")
    for source in sorted({line["source"] for line in lines}):
        part = score([line for line in lines if line["source"] == source])
        clean = part.pop("negative lines")
        expected = sum(row["expected"] for row in part.values())
        found = sum(row["found"] for row in part.values())
        count = sum(line["source"] == source for line in lines)
        print(
            f"{source:10} {count:5} {expected:4.0f} {found:5.0f} {clean['lines']:6.0f} "
            f"{clean['flagged']:7.0f}"
        )
    if args.misses:
        for miss in misses(lines):
            print(miss)


if __name__ == "__main__":
    main()
