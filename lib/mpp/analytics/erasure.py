"""The right to be forgotten in the analytics tables: PostgreSQL and the warehouse.

``erase_user`` is what ``mpp analytics erase`` and the recommender's ForgetUser call; the
analytics service honours ``users.erasure`` records through the store's batches instead
(``mpp.analytics.store.write_batch``), and the warehouse sync applies what is still pending.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from mpp.analytics.store import AnalyticsStore
from mpp.config import Settings
from mpp.errors import RetryableError
from mpp.logs import get_logger
from mpp.warehouse import Warehouse, WarehouseError, open_warehouse, warehouse_id
from mpp.warehouse.sync import WarehouseLock, apply_pending_erasures

# Named as before the split, so that log filters keep matching.
log = get_logger("mpp.analytics")


@dataclass(frozen=True)
class Erasure:
    messages: int
    feedback_events: int
    # Rows the warehouse deleted now (facts and engagement rows of this user and of any other
    # erasure still pending there); None when the warehouse part is still pending.
    warehouse_rows: int | None

    @property
    def warehouse_pending(self) -> bool:
        return self.warehouse_rows is None


def erase_user(
    settings: Settings,
    user_id: str,
    *,
    warehouse: Warehouse | None = None,
    warehouse_timeout_s: float | None = None,
    request_id: str | None = None,
) -> Erasure:
    """Forget ``user_id`` in the analytics tables of PostgreSQL and in the warehouse.

    PostgreSQL: the user's facts are deleted and every aggregate they counted in recomputed,
    in one transaction; the erasure is recorded in the ledger (``mpp.erasure``, so that the
    user's messages still on their way are not written back) and for the warehouse in the same
    transaction.
    Warehouse (``warehouse``, else the configured one): the user's facts and engagement row
    are deleted at once when it answers within ``warehouse_timeout_s`` (default:
    ``MPP_WAREHOUSE__ERASURE_TIMEOUT_S``, 30 s, a running sync included); otherwise the erasure
    stays recorded and the next sync applies it (``Erasure.warehouse_pending``). The anonymous
    aggregates there (campaigns, daily activity) follow at the next sync. Idempotent.
    Raises ``mpp.kafka.RetryableError`` when PostgreSQL cannot be reached.
    """
    if not user_id:
        raise ValueError("erase_user needs a user_id; got an empty one")
    target = warehouse.id if warehouse is not None else warehouse_id(settings)
    store = AnalyticsStore(settings)
    try:
        ledger = {user_id: (request_id or f"analytics-{uuid.uuid4().hex}", datetime.now(UTC))}
        result = store.write([], [], [user_id], warehouse=target, ledger=ledger)
        rows: int | None = None
        opened: Warehouse | None = None
        try:
            opened = warehouse or open_warehouse(settings)
            conn = store.connection()
            timeout = warehouse_timeout_s or settings.warehouse.erasure_timeout_s
            with WarehouseLock(conn, target, timeout):
                rows = apply_pending_erasures(conn, opened)[1]
        except (WarehouseError, psycopg.Error, RetryableError) as exc:
            log.warning("warehouse_erasure_pending", warehouse=target, error=str(exc)[:300])
        finally:
            if opened is not None and warehouse is None:
                opened.close()
    finally:
        store.close()
    return Erasure(result.messages_erased, result.feedback_erased, rows)
