"""The erasure ledger: who asked to be forgotten, and when (table ``erased_users``).

An erasure travels on ``users.erasure`` while the user's last messages may still be on their
way through ``conversations.validated`` and ``conversations.enriched``. A writer that erased the
user and then meets such a message would write it back. So every erasure is also recorded here,
by a keyed hash of the user_id (``mpp.ids.user_hash``, HMAC-SHA-256 with
``MPP_IDS__HMAC_KEY``: the ledger keeps no trace of the user that can be reversed or confirmed
without the key), and the writers drop any message of a recorded user whose timestamp is not
after the erasure. A user who comes back later, with newer messages, is written as usual.

The fence: recording an erasure takes an exclusive transaction-level advisory lock on the
user (``lock_users``); a writer of PostgreSQL rows that may come late (the recommender's
recommendation log and feedback, analytics' facts) takes the same lock shared in its own
transaction and reads the ledger there (``fence``). Either the erasure committed first and the
writer sees it, or the writer committed first and the erasure's DELETE (after its lock) sees
the rows: a write that raced an erasure never survives it.

PostgreSQL down raises ``RetryableError``: the writer's batch waits rather than risk writing an
erased user's message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import psycopg

from mpp.config import Settings
from mpp.errors import RetryableError
from mpp.ids import user_hash, user_hashes
from mpp.logs import get_logger
from mpp.observability import store_operation

log = get_logger(__name__)

__all__ = ["ErasureLedger", "fence", "lock_users", "record_erasure", "user_hash", "user_hashes"]

# The first key of the two-key advisory locks that fence a user's writes against an erasure.
ERASURE_LOCK_SPACE = 0x6D707065  # "mppe"


def _lock_key(user_id: str) -> int:
    """A signed 32-bit key for the user's advisory lock (collisions only serialize more)."""
    return int.from_bytes(bytes.fromhex(user_hash(user_id)[:8]), "big", signed=True)


def lock_users(conn: psycopg.Connection[Any], user_ids: Iterable[str], shared: bool) -> None:
    """Take the users' erasure locks until the end of the caller's transaction: exclusive to
    erase, shared to write. In one order (by key), so that two callers never deadlock."""
    keys = sorted({_lock_key(u) for u in user_ids})
    if not keys:
        return
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    conn.execute(
        f"SELECT {fn}(%s, s.k) FROM (SELECT k FROM unnest(%s::int[]) AS k ORDER BY k) AS s",
        (ERASURE_LOCK_SPACE, keys),
    )


def fence(conn: psycopg.Connection[Any], user_ids: Iterable[str]) -> dict[str, datetime]:
    """In the caller's transaction, before it writes rows of ``user_ids``: lock them shared
    (``lock_users``) and return when those who were erased were erased. The caller drops the
    rows stamped at or before that time."""
    users = set(user_ids)
    lock_users(conn, users, shared=True)
    return erased_at(conn, users)


def erased_at(conn: psycopg.Connection[Any], user_ids: Iterable[str]) -> dict[str, datetime]:
    """For those of ``user_ids`` who were erased: when (under the current or a previous key)."""
    by_hash = {h: u for u in set(user_ids) for h in user_hashes(u)}
    if not by_hash:
        return {}
    found: dict[str, datetime] = {}
    for h, at in conn.execute(
        "SELECT user_hash, erased_at FROM erased_users WHERE user_hash = ANY(%s)",
        (list(by_hash),),
    ).fetchall():
        user = by_hash[h]
        found[user] = max(at, found.get(user, at))
    return found


RECORD = """
INSERT INTO erased_users (user_hash, request_id, erased_at) VALUES (%s, %s, %s)
ON CONFLICT (user_hash) DO UPDATE SET request_id = EXCLUDED.request_id,
                                      erased_at = EXCLUDED.erased_at
WHERE erased_users.erased_at < EXCLUDED.erased_at
"""


def record_erasure(
    conn: psycopg.Connection[Any], user_id: str, request_id: str, erased_at: datetime
) -> None:
    """Record (or move forward) the user's erasure time, in the caller's transaction, holding
    the user's erasure lock (``lock_users``) until it ends: the caller deletes the user's rows
    after this, in the same transaction."""
    lock_users(conn, [user_id], shared=False)
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
        return RetryableError(f"postgres {operation}: {exc}", "postgres")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def record(self, erasures: Mapping[str, tuple[str, datetime]]) -> None:
        """user_id -> (request_id, erased_at), all in one transaction."""
        if not erasures:
            return
        try:
            with store_operation("postgres", "record_erasures"):
                conn = self._connection()
                with conn.transaction():
                    for user_id, (request_id, erased_at) in erasures.items():
                        record_erasure(conn, user_id, request_id, erased_at)
        except psycopg.OperationalError as exc:
            raise self._fail("record erasures", exc) from exc

    def erased_at(self, user_ids: Iterable[str]) -> dict[str, datetime]:
        """For those of ``user_ids`` who were erased: when."""
        users = set(user_ids)
        if not users:
            return {}
        try:
            with store_operation("postgres", "read_erasures"):
                return erased_at(self._connection(), users)
        except psycopg.OperationalError as exc:
            raise self._fail("read erasures", exc) from exc

    def ping(self) -> str | None:
        """Readiness: None when PostgreSQL answers, else a short reason."""
        try:
            self._connection().execute("SELECT 1")
        except psycopg.Error as exc:
            self._fail("ping", exc)
            return f"postgres: {exc}"
        return None
