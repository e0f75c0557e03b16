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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pii_set import SET, build

from mpp.validation import PII_KINDS, pii_spans

Span = tuple[int, int, str]


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
