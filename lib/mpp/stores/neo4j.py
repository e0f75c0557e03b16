"""The graph store in Neo4j: every read and write of users, messages, campaigns and intents.

The graph and its statements: ``mpp.stores.cypher``; the rows: ``mpp.stores.graph_rows``.

Contracts (besides ``mpp.stores.base``'s):
- ``merge_messages`` writes a whole batch as ONE parameterized ``UNWIND ... MERGE`` statement in
  one managed transaction. It is idempotent: a replay changes no node or relationship count.
  A message's ABOUT and HAS_INTENT relationships are those of its latest write (links that a
  re-enrichment dropped are removed); a message listed twice in a batch is written once, as
  its last version.
- The "unknown" intent is not a node: it says that no intent was recognised.
- Times are epoch milliseconds, UTC (``ts``, ``first_seen``, ``last_seen``).
- Transient errors (deadlocks between writers, the server away, an expired session) are
  retried inside the driver's managed transaction for ``neo4j.max_transaction_retry_time_s``;
  if they persist, ``mpp.kafka.RetryableError`` hands the batch back to the loop's backoff.
- ``delete_user`` removes the user and their messages (DETACH DELETE); Campaign and Intent
  nodes are shared and stay.
- A message belongs to the user who sent it first (``mpp.ownership``): the MERGE never writes
  a message whose node another user already SENT (the statement itself checks, so even a
  batch prepared before the other one was written cannot move it), and ``screen_message_ids``
  names those messages before the write (one query), to be dead-lettered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString

import neo4j
from neo4j.exceptions import (
    ClientError,
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

from mpp.config import Settings
from mpp.errors import RetryableError
from mpp.observability import store_operation, store_rows
from mpp.ownership import Conflicts, RecentOwners, screen_owners
from mpp.stores.base import GraphStore
from mpp.stores.clients import neo4j_driver
from mpp.stores.cypher import (
    COUNT_NODES,
    COUNTS,
    DELETE_USER,
    MERGE_MESSAGES,
    MESSAGE_OWNERS,
    SCHEMA,
    USER_GRAPH,
    Label,
)
from mpp.stores.graph_rows import (
    GraphCounts,
    MergeBatch,
    MessageNode,
    PeerCampaigns,
    UserGraph,
    UserMessage,
)
from mpp.v1 import events_pb2

# Metrics: mpp_store_operations_total, mpp_store_operation_duration_seconds (the driver's
# transaction retries included) and mpp_store_rows_total with store="neo4j"
# (``mpp.observability``).
STORE = "neo4j"


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later retry of the same idempotent write may get past."""
    if isinstance(exc, ServiceUnavailable | SessionExpired | TransientError):
        return True
    if isinstance(exc, Neo4jError | DriverError):
        return bool(exc.is_retryable())
    return isinstance(exc, ConnectionError | TimeoutError)


class Neo4jGraphStore(GraphStore):
    """The platform's graph in Neo4j. Thread-safe (the driver pools its connections).

    ``driver``: one built beforehand (the recommender's has shorter timeouts); closed with
    the store. ``read_timeout_s``: the server-side limit of ``user_graph`` (None: the
    server's).
    """

    def __init__(
        self,
        settings: Settings,
        driver: neo4j.Driver | None = None,
        read_timeout_s: float | None = None,
    ) -> None:
        self._cfg = settings.neo4j
        self._driver = driver if driver is not None else neo4j_driver(settings)
        self._read_timeout_s = read_timeout_s
        self._schema_ready = False
        self.recent_owners = RecentOwners()

    def close(self) -> None:
        self._driver.close()

    def _session(self) -> neo4j.Session:
        return self._driver.session(
            database=self._cfg.database,
            max_transaction_retry_time=self._cfg.max_transaction_retry_time_s,
        )

    @contextmanager
    def _op(self, operation: str) -> Iterator[None]:
        with store_operation(STORE, operation):
            try:
                yield
            except Exception as exc:
                if is_transient(exc):
                    raise RetryableError(f"neo4j {operation}: {exc}", STORE) from exc
                raise

    def _write(self, operation: str, query: LiteralString, **params: Any) -> list[neo4j.Record]:
        def work(tx: neo4j.ManagedTransaction) -> list[neo4j.Record]:
            return list(tx.run(query, params))

        with self._op(operation), self._session() as session:
            return session.execute_write(work)

    def _read(self, operation: str, query: LiteralString, **params: Any) -> list[neo4j.Record]:
        def work(tx: neo4j.ManagedTransaction) -> list[neo4j.Record]:
            return list(tx.run(query, params))

        with self._op(operation), self._session() as session:
            return session.execute_read(work)

    def ping(self) -> str | None:
        """Readiness: None when Neo4j answers, else a short reason."""
        try:
            with self._op("ping"):
                self._driver.verify_connectivity()
        except Exception as exc:
            return f"neo4j: {exc}"
        return None

    def ensure_schema(self) -> None:
        """Uniqueness constraints on User.id, Message.id, Campaign.id, Intent.name; idempotent."""
        if self._schema_ready:
            return
        with self._op("ensure_schema"), self._session() as session:
            for statement in SCHEMA:
                try:
                    session.run(statement).consume()
                except ClientError as exc:
                    # The same rule under another name (created by hand or an older
                    # version) is as good as ours.
                    if "EquivalentSchemaRuleAlreadyExists" not in (exc.code or ""):
                        raise
        self._schema_ready = True

    def merge_messages(self, rows: Sequence[MessageNode]) -> int:
        """MERGE the batch in one statement and one transaction; idempotent. A message listed
        twice is written once, as its last version (``MergeBatch``). Returns the rows written.
        """
        return self.merge_batch(MergeBatch.of(rows))

    def merge_batch(self, batch: MergeBatch) -> int:
        """``merge_messages`` of parameters built beforehand. Returns the rows written."""
        if not batch.size:
            return 0
        self.ensure_schema()
        self._write("merge_messages", MERGE_MESSAGES, **batch.parameters)
        store_rows(STORE, "merge_messages", batch.size)
        return batch.size

    def message_owners(self, message_ids: Sequence[str]) -> dict[str, str]:
        """message_id -> user_id of those of ``message_ids`` in the graph: one query."""
        if not message_ids:
            return {}
        records = self._read("message_owners", MESSAGE_OWNERS, ids=list(message_ids))
        return {str(r["id"]): str(r["user_id"]) for r in records}

    def screen_message_ids(self, messages: Sequence[events_pb2.EnrichedMessage]) -> Conflicts:
        """The messages whose id another user's message holds, with their
        ``MESSAGE_ID_CONFLICT`` rejections (``mpp.ownership``); reads, never writes."""
        return screen_owners(messages, self.message_owners, self.recent_owners)

    def delete_user(self, user_id: str) -> int:
        """Remove the user and their messages; idempotent. Returns the messages removed."""
        self.recent_owners.forget_user(user_id)
        records = self._write("delete_user", DELETE_USER, user_id=user_id)
        if not records:
            return 0
        removed = int(records[0]["messages"])
        store_rows(STORE, "delete_user", removed)
        return removed

    # -- reads, for tests and operators ------------------------------------------------------

    def counts(self, user_ids: Sequence[str]) -> GraphCounts:
        """Users, their messages, ABOUT and HAS_INTENT relationships among ``user_ids``."""
        records = self._read("counts", COUNTS, user_ids=list(user_ids))
        record = records[0] if records else None
        return GraphCounts(
            users=int(record["users"]) if record else 0,
            messages=int(record["messages"] or 0) if record else 0,
            about=int(record["about"] or 0) if record else 0,
            has_intent=int(record["has_intent"] or 0) if record else 0,
        )

    def count_nodes(self, label: Label, keys: Sequence[str]) -> int:
        """How many ``label`` nodes exist with these ids (names for Intent)."""
        records = self._read("count_nodes", COUNT_NODES[label], keys=list(keys))
        return int(records[0]["c"])

    def constraints(self) -> dict[str, tuple[str, str]]:
        """Uniqueness constraints by name: (label, property)."""
        records = self._read(
            "constraints",
            "SHOW CONSTRAINTS YIELD name, type, labelsOrTypes, properties "
            "WHERE type = 'UNIQUENESS' RETURN name, labelsOrTypes, properties",
        )
        return {
            r["name"]: (r["labelsOrTypes"][0], r["properties"][0])
            for r in records
            if r["labelsOrTypes"] and r["properties"]
        }

    # -- the recommender's reads -------------------------------------------------------------

    def _run(self, query: LiteralString, **params: Any) -> list[neo4j.Record]:
        # An auto-commit read (RUN + PULL) rather than a managed transaction (BEGIN, RUN, PULL,
        # COMMIT): these reads need no retry (the recommender's breaker handles failures), so
        # they are neither retried nor counted in the store metrics, and errors pass as they are.
        with self._driver.session(
            database=self._cfg.database, default_access_mode=neo4j.READ_ACCESS
        ) as session:
            return list(session.run(neo4j.Query(query, timeout=self._read_timeout_s), params))

    def warm_up(self) -> None:
        """Run the recommender's read once, so that Neo4j has planned it."""
        self.user_graph("", recent=1, per_node=1, peers=1, limit=1)

    def user_graph(
        self, user_id: str, recent: int, per_node: int, peers: int, limit: int
    ) -> UserGraph:
        """In one round trip: the user's ``recent`` newest messages with their intents and
        campaigns (pairs without a name left out, a missing score read as 0), and the
        campaigns of the ``peers`` users (at most ``per_node`` by shared intent or campaign)
        who share the most with those messages, at most ``limit``, the most talked about by
        them first."""
        (record,) = self._run(
            USER_GRAPH,
            user_id=user_id,
            recent=recent,
            per_node=per_node,
            peers=peers,
            limit=limit,
        )
        messages = tuple(
            UserMessage(str(message_id), int(ts), _pairs(intents), _pairs(campaigns))
            for message_id, ts, intents, campaigns in record["messages"]
        )
        found = [
            PeerCampaigns(str(campaign_id), int(count), str(via or ""))
            for campaign_id, count, via in record["peers"]
        ]
        # collect() keeps the subquery's order; sorting again (stable) does not depend on it.
        found.sort(key=lambda p: -p.peers)
        return UserGraph(messages, tuple(found))


def _pairs(values: Iterable[list[Any]]) -> tuple[tuple[str, float], ...]:
    return tuple((str(key), float(score or 0.0)) for key, score in values if key is not None)
