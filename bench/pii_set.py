"""The labelled set of bench/pii.py (tests/data/pii_labelled.jsonl): how each line is built,
from templates, lookalikes, hand-written messages and real chat messages (``build``).

The expected spans come from where the generator put each value (or from the hand labels),
never from the redactor."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pii_values import VALUES, lookalike_fields, ssn_digits

from mpp.validation import normalize_text

SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "pii_labelled.jsonl"
SEED = 14

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
            lines.append(_line(template.format(**lookalike_fields(rng)), [], "lookalike"))
    lines += [_hand_line(marked) for marked in HAND]
    lines += _chitchat(rng, 150)
    return lines
