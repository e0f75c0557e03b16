"""Inputs with known answers for the end-to-end tests."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mpp.pipeline import Pipeline, log

__all__ = ["Pipeline", "Replay", "build_replay", "log"]


@dataclass
class Replay:
    """An input with known answers: what is valid and unique, what is invalid."""

    records: list[bytes]
    keys: list[bytes | None]
    unique_valid: int
    invalid: dict[bytes, str]  # original bytes -> expected error code name
    users: int


def _invalid_events(run_id: str, count: int) -> Iterator[tuple[bytes, str]]:
    now_ms = int(time.time() * 1000)
    makers = [
        (
            lambda i: json.dumps(
                {"user_id": f"{run_id}-x{i}", "message": " \t ", "timestamp": now_ms - i}
            ).encode(),
            "ERROR_CODE_MESSAGE_EMPTY",
        ),
        (
            lambda i: json.dumps({"message": f"no user {i}", "timestamp": now_ms}).encode(),
            "ERROR_CODE_USER_ID_MISSING",
        ),
        (
            lambda i: json.dumps(
                {"user_id": f"bad user {i}", "message": "hi", "timestamp": now_ms}
            ).encode(),
            "ERROR_CODE_USER_ID_INVALID",
        ),
        (
            lambda i: json.dumps(
                {"user_id": f"{run_id}-x{i}", "message": "hi", "timestamp": f"day {i}"}
            ).encode(),
            "ERROR_CODE_TIMESTAMP_INVALID",
        ),
        (
            lambda i: json.dumps(
                {"user_id": f"{run_id}-x{i}", "message": "hi", "timestamp": now_ms + 86_400_000 + i}
            ).encode(),
            "ERROR_CODE_TIMESTAMP_IN_FUTURE",
        ),
        (
            lambda i: json.dumps(
                {"user_id": f"{run_id}-x{i}", "message": "x" * 5000 + str(i), "timestamp": now_ms}
            ).encode(),
            "ERROR_CODE_MESSAGE_TOO_LONG",
        ),
        (lambda i: f"{{not json {i}".encode(), "ERROR_CODE_UNDECODABLE"),
        (
            lambda i: json.dumps(
                {"userId": f"{run_id}-x{i}", "message": "hi", "timestamp": now_ms}
            ).encode(),
            "ERROR_CODE_SCHEMA_INVALID",
        ),
    ]
    for i in range(count):
        make, code = makers[i % len(makers)]
        yield make(i), code


def build_replay(
    events: list[dict[str, Any]],
    run_id: str,
    duplicate_share: float,
    invalid_share: float,
    seed: int = 7,
) -> Replay:
    """Chat events (user ids prefixed by run_id), plus duplicates and invalid events."""
    rng = random.Random(seed)
    valid: list[tuple[bytes, bytes]] = []
    invalid: dict[bytes, str] = {}
    identities = set()
    users = set()
    for event in events:
        user = f"{run_id}-{event['user_id'][:12]}"
        value = json.dumps({**event, "user_id": user}).encode()
        if not event["message"].strip():
            invalid[value] = "ERROR_CODE_MESSAGE_EMPTY"
            continue
        valid.append((user.encode(), value))
        users.add(user)
        # Independent of the code under test: a message's identity is its user, its instant
        # and its words.
        ts = datetime.fromisoformat(event["timestamp"]).timestamp()
        identities.add((user, ts, " ".join(event["message"].split())))
    pairs: list[tuple[bytes | None, bytes]] = [(k, v) for k, v in valid]
    # Chat messages that are empty once trimmed are invalid as they come, keyed by their user.
    pairs += [(json.loads(v)["user_id"].encode(), v) for v in invalid]
    pairs += rng.sample(valid, int(len(events) * duplicate_share))
    for value, code in _invalid_events(run_id, int(len(events) * invalid_share)):
        invalid[value] = code
        pairs.append((b"invalid", value))
    rng.shuffle(pairs)
    return Replay(
        records=[v for _, v in pairs],
        keys=[k for k, _ in pairs],
        unique_valid=len(identities),
        invalid=invalid,
        users=len(users),
    )
