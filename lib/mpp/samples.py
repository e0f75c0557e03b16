"""Sample conversations for replays, demos and load tests: chitchat-dataset (PyPI).

The dataset holds about 258k chat messages from 1,315 senders with timestamps; each message
becomes one raw event ``{"user_id": sender, "message": text, "timestamp": RFC 3339}``, in the
dataset's order (conversation by conversation).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any


def chitchat_events(limit: int | None = None) -> Iterator[dict[str, Any]]:
    path = resources.files("chitchat_dataset").joinpath("dataset.json")
    conversations = json.loads(path.read_text(encoding="utf-8"))
    produced = 0
    for conversation in conversations.values():
        for turn in conversation["messages"]:
            for utterance in turn:
                if limit is not None and produced >= limit:
                    return
                yield {
                    "user_id": utterance["sender"],
                    "message": utterance["text"],
                    "timestamp": utterance["timestamp"],
                }
                produced += 1


def read_events(path: Path) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) pairs from a JSON Lines or CSV file of raw events.

    JSON lines are sent byte for byte as they are (ingest validates them, and a malformed
    line must reach the DLQ, not vanish here); the key is the line's user_id when it has one.
    CSV rows (header: user_id,message,timestamp,...) become JSON objects.
    """
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                record = {k: v for k, v in row.items() if v not in (None, "")}
                user = record.get("user_id")
                yield (user.encode() if user else None), json.dumps(record).encode()
        return
    with path.open("rb") as f:
        for raw_line in f:
            line = raw_line.rstrip(b"\r\n")
            if not line.strip():
                continue
            key = None
            try:
                record = json.loads(line)
                if isinstance(record, dict) and isinstance(record.get("user_id"), str):
                    key = record["user_id"].encode()
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass
            yield key, line
