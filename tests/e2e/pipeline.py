"""Inputs with known answers for the end-to-end tests."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.pipeline import Pipeline, log
from mpp.stores.campaigns import upsert_campaigns

__all__ = ["Pipeline", "Replay", "build_replay", "isolated_run", "log"]


@contextmanager
def isolated_run(
    settings: Settings,
    unique: str,
    home: Path,
    extra_env: dict[str, str] | None = None,
    campaigns: bool = False,
) -> Iterator[Pipeline]:
    """A pipeline run on Milvus collections and consumer groups of its own (``settings``
    brings the topics and, where the test has one, the PostgreSQL database); with
    ``campaigns``, the default campaign catalog loaded into that database. The run's
    services are stopped and its collections removed afterwards."""
    milvus = settings.milvus.model_copy(
        update={
            "messages_collection": f"messages_{unique}",
            "campaigns_collection": f"campaigns_{unique}",
        }
    )
    kafka = settings.kafka.model_copy(update={"group_prefix": f"e2e-{unique}"})
    settings = settings.model_copy(update={"milvus": milvus, "kafka": kafka})
    if campaigns:
        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
            upsert_campaigns(conn, parse_campaigns(default_campaigns_path()))
    run = Pipeline(settings=settings, run_id=f"r{unique}", home=home, extra_env=extra_env or {})
    try:
        yield run
    finally:
        run.stop()
        run.cleanup()


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
