"""The values bench/pii.py's labelled set is made of, each written the ways people write it
(grouped, bare, dotted, with a country code...), and the fields of its lookalikes: numbers
that look like PII but are not (``lookalike_fields``)."""

from __future__ import annotations

import random
from collections.abc import Callable

from mpp.validation import iban_valid, luhn_valid

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


def lookalike_fields(rng: random.Random) -> dict[str, str]:
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
