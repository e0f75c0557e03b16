"""PII redaction time on text made to backtrack, beside ordinary chat text of the same length.

    .venv/bin/python bench/redaction.py [--chars 4000] [--seconds 0.3]

No server. ``mpp.validation.redact_pii`` (what ingest and the batch job run on every message)
on inputs built for each PII pattern so that a backtracking regex engine retries from every
character: long runs of the characters the pattern is made of (letters, digits, dots, dashes,
``@``, spaces, ``+``, parentheses, accented letters and combining marks, country codes and
check digits, the words that label an SSN or an order number), and the densest run of real
matches (each one a Python callback), for each kind (e-mail, IBAN, card, SSN, phone).
Beside it, in the same run:
- the baseline: the same call on ordinary chat of the same length (chitchat-dataset messages
  joined by spaces, with one or two of each kind of PII in the middle);
- for the e-mail inputs, ``EMAIL.sub`` alone: how redaction searched for addresses before
  ``email_spans`` (quadratic in the length of a run of local-part characters).
Each figure is the median over as many calls as fit in ``--seconds`` (at least 5), in ms per
call. Target (issue): every input under 5 ms at 4,000 characters.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from mpp.samples import chitchat_events
from mpp.validation import EMAIL, redact_pii


def fill(unit: str, chars: int) -> str:
    return (unit * (chars // len(unit) + 1))[:chars]


def adversarial(chars: int) -> dict[str, dict[str, str]]:
    half = chars // 2
    return {
        "email": {
            "letters, no @": fill("a", chars),
            "digits and dots": fill("1.", chars),
            "local part, @, domain without a dot": "a" * half + "@" + "b" * (chars - half - 1),
            "a.a@ repeated": fill("a.a@", chars),
            "@ only": fill("@", chars),
            "addresses back to back": fill("a@b.cd ", chars),
            "accented letters, no @": fill("é", chars),
            "combining marks": fill("a\u0301", chars),
            "IDN labels without a top-level domain": "ü@" + fill("ä.1", chars - 2),
            "international addresses back to back": fill("josé@exämple.de ", chars),
        },
        "iban": {
            "country and check digits, spaced": fill("DE89 ", chars),
            "one long word after a country": "DE89" + fill("A", chars - 4),
            "letters and digits, spaced": fill("GB82 WEST ", chars),
            "valid IBANs back to back": fill("DE89 3704 0044 0532 0130 00 ", chars),
        },
        "card": {
            "digits": fill("1", chars),
            "digits and spaces": fill("1 ", chars),
            "digits and dashes": fill("1-", chars),
            "valid cards back to back": fill("4111 1111 1111 1111, ", chars),
            "digits and dots": fill("4.", chars),
            "valid dotted cards back to back": fill("4111.1111.1111.1111, ", chars),
        },
        "ssn": {
            "3-2-4 groups back to back": fill("123-45-6789 ", chars),
            "the word SSN and digits": fill("ssn 123456789 ", chars),
            "the words without digits": fill("social security number ", chars),
        },
        "phone": {
            "digits and dots": fill("1.", chars),
            "plus, digit, parenthesis": fill("+1 (2", chars),
            "digits, dash, dot, space": fill("1-. ", chars),
            "phone numbers back to back": fill("+1 (555) 123-4567 ", chars),
            "9-digit groups": fill("123456789 ", chars),
            "bare 10-digit numbers": fill("2125550143 ", chars),
            "order numbers (id words before)": fill("order 2125550143 ", chars),
        },
    }


def ordinary(chars: int) -> str:
    """Real chat messages up to ``chars``, with one of each kind of PII in the middle."""
    words: list[str] = []
    length = 0
    for event in chitchat_events():
        words.append(event["message"])
        length += len(event["message"]) + 1
        if length > chars:
            break
    text = " ".join(words)
    middle = chars // 2
    pii = (
        " write to jane.doe@example.com or josé@exämple.de, card 4111 1111 1111 1111, IBAN"
        " DE89 3704 0044 0532 0130 00, SSN 078-05-1120, call +44 20 7946 0958 or 2125550143 "
    )
    return (text[:middle] + pii + text[middle:])[:chars]


def ms_per_call(call: Callable[[str], object], text: str, seconds: float) -> float:
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        started = time.perf_counter()
        call(text)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=0.3, help="per figure")
    args = parser.parse_args()

    baseline_text = ordinary(args.chars)
    _, kinds = redact_pii(baseline_text)
    baseline = ms_per_call(redact_pii, baseline_text, args.seconds)
    print(f"{args.chars} characters per input; ms per call (median)")
    print(f"baseline: redact_pii on ordinary chat ({', '.join(kinds)} found): {baseline:.3f} ms")
    print()
    print(f"{'pattern':7} {'input':38} {'redact_pii':>11} {'x baseline':>11} {'EMAIL.sub':>10}")
    for pattern, inputs in adversarial(args.chars).items():
        for name, text in inputs.items():
            ms = ms_per_call(redact_pii, text, args.seconds)
            before = ""
            if pattern == "email":
                old = ms_per_call(lambda t: EMAIL.sub("[email]", t), text, args.seconds)
                before = f"{old:10.3f}"
            print(f"{pattern:7} {name:38} {ms:11.3f} {ms / baseline:11.1f} {before:>10}")


if __name__ == "__main__":
    main()
