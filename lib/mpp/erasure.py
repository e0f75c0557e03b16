"""The erasure ledger: who asked to be forgotten, and when (table ``erased_users``).

An erasure travels on ``users.erasure`` while the user's last messages may still be on their
way through ``conversations.validated`` and ``conversations.enriched``. A writer that erased the
user and then meets such a message would write it back. So every erasure is also recorded here,
by the SHA-256 of the user_id (the ledger keeps no readable trace of the user), and the writers
drop any message of a recorded user whose timestamp is not after the erasure. A user who comes
back later, with newer messages, is written as usual.

PostgreSQL down raises ``RetryableError``: the writer's batch waits rather than risk writing an
erased user's message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import psycopg

from mpp.config import Settings
from mpp.kafka import RetryableError
from mpp.logs import get_logger

log = get_logger(__name__)


def user_hash(user_id: str) -> str:
    """How ``erased_users`` names a user: SHA-256 hex of the UTF-8 user_id."""
    return hashlib.sha256(user_id.encode()).hexdigest()


RECORD = """
INSERT INTO erased_users (user_hash, request_id, erased_at) VALUES (%s, %s, %s)
ON CONFLICT (user_hash) DO UPDATE SET request_id = EXCLUDED.request_id,
                                      erased_at = EXCLUDED.erased_at
WHERE erased_users.erased_at < EXCLUDED.erased_at
"""


def record_erasure(
    conn: psycopg.Connection[Any], user_id: str, request_id: str, erased_at: datetime
) -> None:
    """Record (or move forward) the user's erasure time, in the caller's transaction."""
    conn.execute(RECORD, (user_hash(user_id), request_id, erased_at))


class ErasureLedger:
    """``erased_users`` for a writer: one connection, re-opened after a failure."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._settings.postgres.conninfo(), autocommit=True)
        return self._conn

    def _fail(self, operation: str, exc: psycopg.Error) -> RetryableError:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        return RetryableError(f"postgres {operation}: {exc}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def record(self, erasures: Mapping[str, tuple[str, datetime]]) -> None:
        """user_id -> (request_id, erased_at), all in one transaction."""
        if not erasures:
            return
        try:
            conn = self._connection()
            with conn.transaction():
                for user_id, (request_id, erased_at) in erasures.items():
                    record_erasure(conn, user_id, request_id, erased_at)
        except psycopg.OperationalError as exc:
            raise self._fail("record erasures", exc) from exc

    def erased_at(self, user_ids: Iterable[str]) -> dict[str, datetime]:
        """For those of ``user_ids`` who were erased: when."""
        by_hash = {user_hash(u): u for u in set(user_ids)}
        if not by_hash:
            return {}
        try:
            rows = (
                self._connection()
                .execute(
                    "SELECT user_hash, erased_at FROM erased_users WHERE user_hash = ANY(%s)",
                    (list(by_hash),),
                )
                .fetchall()
            )
        except psycopg.OperationalError as exc:
            raise self._fail("read erasures", exc) from exc
        return {by_hash[h]: at for h, at in rows}

    def ping(self) -> str | None:
        """Readiness: None when PostgreSQL answers, else a short reason."""
        try:
            self._connection().execute("SELECT 1")
        except psycopg.Error as exc:
            self._fail("ping", exc)
            return f"postgres: {exc}"
        return None
