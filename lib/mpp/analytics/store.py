"""The analytics store: facts and serving aggregates in PostgreSQL, behind one interface.

``AnalyticsStore.write`` (or ``write_batch`` on a connection of your own) takes a batch of
facts (``mpp.analytics.facts``) and erasures and applies it in ONE transaction. Its contract:

- Idempotent. Facts are keyed by their stable ids (``message_facts`` by message_id,
  ``feedback_facts`` by feedback_id): a replay of the same content writes nothing. A message
  fact takes its latest version (a re-enrichment replaces it, as in Milvus and Neo4j); a
  feedback event is immutable and keeps its first. A message_id that another user already
  owns is not moved (``WriteResult.message_id_conflicts``).
- Erasure wins. Facts of a user erased at or after their time (the ledger, ``mpp.erasure``)
  are never written; the batch's erasures are applied before its facts.
- Exact aggregates. The aggregates of every key the batch changed (users, (campaign, day),
  campaigns, (day, channel) of the facts written, replaced or deleted) are recomputed from
  the facts in the same transaction (``mpp.analytics.aggregates``): they always equal a plain
  recomputation, whatever was replayed. Writers serialize on one transaction-level advisory
  lock (``AGGREGATE_LOCK``): two analytics instances (or ``erase_user``) recomputing the same
  campaign at once would otherwise each miss the other's uncommitted facts.
- Time zones and units: times are aware and stored as ``timestamptz``; ``day`` is the UTC
  date of ``occurred_at``; counts are plain counts, rates fractions in [0, 1].
- Failure: PostgreSQL unreachable raises ``RetryableError`` (cause ``postgres``) and nothing
  is written; a value PostgreSQL refuses raises ``psycopg.DataError``/``IntegrityError``.

Schema: migrations 0002 and 0003 (``mpp.db``); columns: the catalog, ``mpp.warehouse.tables``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from mpp.analytics.aggregates import recompute
from mpp.analytics.facts import FeedbackFact, MessageFact, Touched
from mpp.config import Settings
from mpp.erasure import record_erasure
from mpp.errors import RetryableError
from mpp.ids import user_hashes
from mpp.observability import store_operation, store_rows
from mpp.warehouse.tables import TABLES

# pg_advisory_xact_lock key for aggregate recomputation ("mppa").
AGGREGATE_LOCK = 0x6D707061
_MESSAGES, _FEEDBACK = TABLES["message_facts"], TABLES["feedback_facts"]
# The ledger's names for a fact's user, sent along with each fact (``_hashed``).
_HASHES = "user_hashes text[]"

# The campaigns' totals over all days, for every reader of ``campaign_performance`` (the
# reports here, the recommender's popularity source).
CAMPAIGN_PERFORMANCE_SQL = (
    f"SELECT {TABLES['campaign_performance'].column_list()} FROM campaign_performance"
)


@dataclass(frozen=True)
class WriteResult:
    messages_inserted: int
    feedback_inserted: int
    messages_erased: int
    feedback_erased: int
    users_recomputed: int
    campaigns_recomputed: int
    # Message ids of the batch that another user already owns: not written (their facts
    # stay with the first user); the caller dead-letters them (MESSAGE_ID_CONFLICT).
    message_id_conflicts: tuple[str, ...] = ()


# Facts of a user erased at or after their time are not written (``mpp.erasure``: the ledger
# names users by a keyed hash of their id, computed here in Python under every key in use and
# passed as ``user_hashes``): a replay, or a message still on its way when the erasure came,
# cannot bring the user back.
_NOT_ERASED = """
NOT EXISTS (SELECT 1 FROM erased_users e
            WHERE e.user_hash = ANY(x.user_hashes)
              AND x.occurred_at <= e.erased_at)
"""

# A message fact takes its latest version: a replay of the same content changes nothing (and
# returns nothing); another content (a re-enrichment) replaces the row, and both the old and
# the new keys are returned so that the aggregates of both are recomputed. ``recorded_at``
# moves, so that the warehouse sync carries the new version. A message_id that another user
# already owns is never moved to the new one: its row stays, and the id is returned as a
# conflict (kind 'conflict', user_id = the message_id) for the dead-letter queue.
_INSERT_MESSAGES = f"""
WITH incoming AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS x({_MESSAGES.postgres_record(_HASHES)})
    WHERE {_NOT_ERASED}
), conflicts AS (
    SELECT i.message_id FROM message_facts f JOIN incoming i USING (message_id)
    WHERE f.user_id <> i.user_id
), replaced AS (
    SELECT f.user_id, f.day, f.channel, f.campaign_ids
    FROM message_facts f JOIN incoming i USING (message_id)
    WHERE f.user_id = i.user_id
      AND (f.occurred_at, f.channel, f.intents, f.campaign_ids)
          IS DISTINCT FROM (i.occurred_at, i.channel, i.intents, i.campaign_ids)
), written AS (
    INSERT INTO message_facts ({_MESSAGES.column_list()})
    SELECT {_MESSAGES.column_list()} FROM incoming
    ON CONFLICT (message_id) DO UPDATE
        SET occurred_at = EXCLUDED.occurred_at,
            day = EXCLUDED.day, channel = EXCLUDED.channel, intents = EXCLUDED.intents,
            campaign_ids = EXCLUDED.campaign_ids, recorded_at = now()
        WHERE message_facts.user_id = EXCLUDED.user_id
          AND (message_facts.occurred_at, message_facts.channel,
               message_facts.intents, message_facts.campaign_ids)
              IS DISTINCT FROM (EXCLUDED.occurred_at, EXCLUDED.channel,
                                EXCLUDED.intents, EXCLUDED.campaign_ids)
    RETURNING user_id, day, channel, campaign_ids
)
SELECT user_id, day, channel, campaign_ids, 'written' FROM written
UNION ALL
SELECT user_id, day, channel, campaign_ids, 'replaced' FROM replaced
UNION ALL
SELECT message_id, NULL::date, NULL, NULL::text[], 'conflict' FROM conflicts
"""

# A feedback event is immutable: its first version counts, a replay inserts nothing.
_INSERT_FEEDBACK = f"""
INSERT INTO feedback_facts ({_FEEDBACK.column_list()})
SELECT {_FEEDBACK.column_list()}
FROM jsonb_to_recordset(%s::jsonb) AS x({_FEEDBACK.postgres_record(_HASHES)})
WHERE {_NOT_ERASED}
ON CONFLICT (feedback_id) DO NOTHING
RETURNING user_id, day, channel, campaign_id
"""


def _hashed(fact: dict[str, Any]) -> dict[str, Any]:
    """A fact's JSON with the ledger's names for its user (``_NOT_ERASED``)."""
    return {**fact, "user_hashes": user_hashes(fact["user_id"])}


def _delete_user_facts(
    conn: psycopg.Connection[Any], users: Sequence[str], touched: Touched
) -> tuple[int, int]:
    deleted: list[int] = []
    # Each deleted fact returns the keys it counted in, for ``recompute``.
    facts: tuple[tuple[str, str, Callable[..., None]], ...] = (
        ("message_facts", "campaign_ids", touched.add_message),
        ("feedback_facts", "campaign_id", touched.add_feedback),
    )
    for table, campaigns, add in facts:
        rows = conn.execute(
            f"DELETE FROM {table} WHERE user_id = ANY(%s)"
            f" RETURNING user_id, day, channel, {campaigns}",
            (list(users),),
        ).fetchall()
        for row in rows:
            add(*row)
        deleted.append(len(rows))
    # A user with no facts left has no engagement row; recompute deletes it.
    touched.users.update(users)
    return deleted[0], deleted[1]


def write_batch(
    conn: psycopg.Connection[Any],
    messages: Sequence[MessageFact],
    feedback: Sequence[FeedbackFact],
    erasures: Sequence[str] = (),
    warehouse: str | None = None,
    ledger: Mapping[str, tuple[str, datetime]] | None = None,
) -> WriteResult:
    """Erase, write facts (replays write nothing), recompute what changed: one transaction.

    ``warehouse`` (a ``mpp.warehouse.warehouse_id``) records the erasures that the warehouse
    still has to apply. ``ledger`` (user -> (request id, erasure time)) records erasures in
    ``erased_users`` first, so that this batch's and any later facts of those users sent
    before their erasure are not written. Raises ``RetryableError`` when PostgreSQL cannot be
    reached; nothing is then written.
    """
    touched = Touched()
    conflicts: list[str] = []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (AGGREGATE_LOCK,))
            for user_id, (request_id, erased_at) in (ledger or {}).items():
                record_erasure(conn, user_id, request_id, erased_at)
            erased = _delete_user_facts(conn, erasures, touched) if erasures else (0, 0)
            if erasures and warehouse is not None:
                conn.execute(
                    "INSERT INTO analytics_pending_erasures (warehouse, user_id)"
                    " SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                    (warehouse, list(erasures)),
                )
            inserted_messages = inserted_feedback = 0
            if messages:
                rows = conn.execute(
                    _INSERT_MESSAGES, (json.dumps([_hashed(m.as_json()) for m in messages]),)
                ).fetchall()
                inserted_messages = sum(1 for *_, kind in rows if kind == "written")
                for user_id, day, channel, campaigns, kind in rows:
                    if kind == "conflict":
                        conflicts.append(user_id)  # the message_id (see _INSERT_MESSAGES)
                    else:
                        touched.add_message(user_id, day, channel, campaigns)
            if feedback:
                rows = conn.execute(
                    _INSERT_FEEDBACK, (json.dumps([_hashed(f.as_json()) for f in feedback]),)
                ).fetchall()
                inserted_feedback = len(rows)
                for user_id, day, channel, campaign_id in rows:
                    touched.add_feedback(user_id, day, channel, campaign_id)
            recompute(conn, touched)
    except psycopg.OperationalError as exc:
        raise RetryableError(f"postgres: {exc}", "postgres") from exc
    return WriteResult(
        messages_inserted=inserted_messages,
        feedback_inserted=inserted_feedback,
        messages_erased=erased[0],
        feedback_erased=erased[1],
        users_recomputed=len(touched.users),
        campaigns_recomputed=len(touched.campaigns),
        message_id_conflicts=tuple(sorted(conflicts)),
    )


class AnalyticsStore:
    """One PostgreSQL connection for the service, reopened after a failure."""

    def __init__(self, settings: Settings) -> None:
        self._conninfo = settings.postgres.conninfo()
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self._conninfo, autocommit=True)
            except psycopg.OperationalError as exc:
                raise RetryableError(f"postgres: {exc}", "postgres") from exc
        return self._conn

    def write(
        self,
        messages: Sequence[MessageFact],
        feedback: Sequence[FeedbackFact],
        erasures: Sequence[str] = (),
        warehouse: str | None = None,
        ledger: Mapping[str, tuple[str, datetime]] | None = None,
    ) -> WriteResult:
        try:
            with store_operation("postgres", "write_batch"):
                result = write_batch(
                    self.connection(), messages, feedback, erasures, warehouse, ledger
                )
        except RetryableError:
            self.close()
            raise
        store_rows("postgres", "write_batch", result.messages_inserted + result.feedback_inserted)
        if result.messages_erased or result.feedback_erased:
            store_rows("postgres", "erase_facts", result.messages_erased + result.feedback_erased)
        return result

    def ping(self) -> str | None:
        """None when PostgreSQL answers; its own short connection, so that a probe never
        touches the loop's."""
        try:
            with psycopg.connect(self._conninfo, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return f"postgres: {str(exc).strip()[:200]}"
        return None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
