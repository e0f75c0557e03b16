"""Erasure: forgetting a user in every store the recommender reaches, and the erasures this
process knows, which fence what it writes afterwards.

``Eraser.forget_user`` publishes the erasure on its topic (acknowledged: every writer
removes the user when it reads it), then removes the user at once from the recommender's
tables and the erasure ledger, Redis, Milvus, Neo4j and the analytics facts and warehouse
(``mpp.analytics.erase_user``). A store that cannot be reached now is reported ``pending``:
the writers and the next warehouse sync apply the published erasure.

``ErasedUsers.is_erased`` answers from the erasures this process knows: the ledger's at
start, its own, and the erasure topic's (``mpp_recommender.activity``); each user is known by
every key hash in use (``mpp.ids.user_hashes``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mpp.config import Settings
from mpp.erasure import record_erasure
from mpp.ids import user_hash, user_hashes
from mpp.kafka import TrackedProducer
from mpp.logs import get_logger
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R
from mpp_recommender.cache import RedisCache
from mpp_recommender.checks import InvalidArgument, Unavailable, check_user_id
from mpp_recommender.sources import MilvusSource, PostgresSource

log = get_logger(__name__)

# How long an erasure waits for the warehouse before leaving it to the next sync.
WAREHOUSE_TIMEOUT_S = 5.0


class ErasedUsers:
    """The erasures this process knows: user_hash -> erasure time (epoch ms). Sessions,
    answers kept in process and feedback ignore what a user did at or before it."""

    def __init__(self) -> None:
        self.erased: dict[str, int] = {}

    def load(self, postgres: PostgresSource) -> None:
        """Learn the erasures of the ledger (``erased_users``); raises when PostgreSQL fails."""
        with postgres.pool.connection() as conn:
            for user_key, erased_at in conn.execute(
                "SELECT user_hash, erased_at FROM erased_users"
            ):
                self.erased[user_key] = int(erased_at.timestamp() * 1000)

    def note(self, user_id: str, at_ms: int) -> None:
        key = user_hash(user_id)
        self.erased[key] = max(self.erased.get(key, 0), at_ms)

    def is_erased(self, user_id: str, ts_ms: int) -> bool:
        """Whether ``ts_ms`` is at or before an erasure of the user that this process knows
        (its own, the erasure topic's, the ledger's at start; any key in use)."""
        at = max((self.erased.get(h, -1) for h in user_hashes(user_id)), default=-1)
        return at >= 0 and ts_ms <= at


@dataclass(slots=True)
class Eraser:
    """Erases a user everywhere and notes the erasure in ``erased``.

    ``forget_answer(user_id)`` drops what the caller keeps of the user in process (its last
    answer) once the erasure is published.
    """

    settings: Settings
    producer: TrackedProducer
    postgres: PostgresSource
    cache: RedisCache
    milvus: MilvusSource
    graph: Neo4jGraphStore
    erased: ErasedUsers
    forget_answer: Callable[[str], None]

    def forget_user(
        self, user_id: str, reason: str = "", requested_by: str = ""
    ) -> R.ForgetUserResponse:
        """Publish the erasure (acknowledged), then remove the user from every store.

        Raises Unavailable when the erasure cannot be published (nothing is removed; retry).
        Stores that cannot be reached now are listed in ``pending``: their writers remove the
        user when they read the published erasure.
        """
        check_user_id(user_id)
        if len(reason) > 1000:
            raise InvalidArgument("reason", "is longer than 1000 characters")
        request = F.ErasureRequest(
            request_id=uuid.uuid4().hex,
            user_id=user_id,
            requested_by=requested_by,
            reason=reason,
        )
        request.requested_at.GetCurrentTime()
        try:
            self.producer.produce(
                self.settings.kafka.topics.erasure, request.SerializeToString(), key=user_id
            )
            self.producer.flush(10.0)
        except Exception as exc:
            raise Unavailable(
                f"kafka: erasure not published ({exc}); nothing erased, retry"
            ) from exc
        erased_at = request.requested_at.ToDatetime(tzinfo=UTC)
        self.erased.note(user_id, request.requested_at.ToMilliseconds())
        self.forget_answer(user_id)
        done: list[str] = []
        pending: list[str] = []
        steps: list[tuple[str, Callable[[], object]]] = [
            ("postgres", lambda: self._erase_postgres(user_id, request.request_id, erased_at)),
            ("redis", lambda: self.cache.delete_users([user_id])),
            ("milvus", lambda: self.milvus.store.delete_user(user_id)),
            ("neo4j", lambda: self.graph.delete_user(user_id)),
            ("warehouse", lambda: self._erase_warehouse(user_id)),
        ]
        for store, step in steps:
            try:
                step()
                done.append(store)
            except Exception as exc:
                pending.append(store)
                log.warning(
                    "erasure_pending", store=store, request_id=request.request_id, error=str(exc)
                )
        log.info("user_forgotten", request_id=request.request_id, erased_from=done, pending=pending)
        return R.ForgetUserResponse(
            request_id=request.request_id, erased_from=done, pending=pending
        )

    def _erase_postgres(self, user_id: str, request_id: str, erased_at: datetime) -> None:
        """The recommender's own tables and the erasure record (the analytics facts are the
        warehouse step's, with the aggregates they counted in)."""
        with self.postgres.pool.connection() as conn, conn.transaction():
            record_erasure(conn, user_id, request_id, erased_at)
            for table in ("recommendation_log", "recommender_feedback"):
                conn.execute(f"DELETE FROM {table} WHERE user_id = %s", (user_id,))

    def _erase_warehouse(self, user_id: str) -> None:
        """Analytics facts, the aggregates they counted in, and the warehouse, through
        ``mpp.analytics.erase_user``. Raises when the warehouse could not be reached now (the
        erasure stays recorded there, and its next sync applies it)."""
        # Imported at the first erasure: a recommender that never erases does not load the
        # analytics library.
        from mpp.analytics import erase_user

        result = erase_user(self.settings, user_id, warehouse_timeout_s=WAREHOUSE_TIMEOUT_S)
        if result.warehouse_pending:
            raise RuntimeError("warehouse unreachable; its next sync applies the erasure")
