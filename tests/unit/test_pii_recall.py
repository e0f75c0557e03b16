"""PII redaction measured on the labelled set tests/data/pii_labelled.jsonl (bench/pii.py builds
it and prints the same table): recall per kind and false positives, the figures that
docs/security.md gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mpp.validation import PII_KINDS, pii_spans, redact_pii

SET = Path(__file__).resolve().parent.parent / "data" / "pii_labelled.jsonl"
MIN_RECALL = 0.95
MAX_FALSE_POSITIVE_RATE = 0.02


def _lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines() if line]


LINES = _lines()


def _found(line: dict[str, Any], span: dict[str, Any]) -> bool:
    return any(
        p.kind == span["kind"] and p.start <= span["start"] and span["end"] <= p.end
        for p in pii_spans(line["text"])
    )


def test_the_set_is_big_enough_and_well_formed() -> None:
    assert len(LINES) >= 300
    sources = {line["source"] for line in LINES}
    assert {"template", "hand", "lookalike", "chitchat"} <= sources
    for kind in PII_KINDS:
        assert sum(s["kind"] == kind for line in LINES for s in line["spans"]) >= 50, kind
    assert sum(not line["spans"] for line in LINES) >= 300  # lines without PII
    for line in LINES:
        ends = 0
        for span in line["spans"]:
            assert span["kind"] in PII_KINDS
            assert ends <= span["start"] < span["end"] <= len(line["text"]), line
            ends = span["end"]


@pytest.mark.parametrize("kind", PII_KINDS)
def test_recall_per_kind(kind: str) -> None:
    expected = [(line, s) for line in LINES for s in line["spans"] if s["kind"] == kind]
    missed = [line["text"] for line, span in expected if not _found(line, span)]
    recall = 1 - len(missed) / len(expected)
    assert recall >= MIN_RECALL, (recall, missed[:10])


@pytest.mark.parametrize("kind", PII_KINDS)
def test_false_positives_per_kind(kind: str) -> None:
    """Of the spans of a kind that redaction finds, at most 2% are not that kind of PII."""
    predicted = false = 0
    for line in LINES:
        for p in pii_spans(line["text"]):
            if p.kind != kind:
                continue
            predicted += 1
            false += not any(
                s["kind"] == kind and s["start"] < p.end and p.start < s["end"]
                for s in line["spans"]
            )
    assert predicted > 0
    assert false / predicted <= MAX_FALSE_POSITIVE_RATE, (false, predicted)


def test_lines_without_pii_are_left_alone() -> None:
    clean = [line["text"] for line in LINES if not line["spans"]]
    flagged = [text for text in clean if redact_pii(text)[1]]
    assert len(flagged) / len(clean) <= MAX_FALSE_POSITIVE_RATE, flagged


def test_redacted_lines_keep_almost_no_labelled_value() -> None:
    """Whatever kind it is given, a labelled value is gone from the redacted text (what a
    reader of the topics would see), for at least 95% of the values of every kind."""
    for kind in PII_KINDS:
        values = leaked = 0
        for line in LINES:
            redacted, _ = redact_pii(line["text"])
            for span in line["spans"]:
                if span["kind"] == kind:
                    values += 1
                    leaked += line["text"][span["start"] : span["end"]] in redacted
        assert leaked / values <= 1 - MIN_RECALL, (kind, leaked, values)
