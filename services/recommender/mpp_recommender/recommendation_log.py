"""The recommendation log: what the recommender served (computed answers, not cache hits),
written to PostgreSQL's ``recommendation_log`` by a background thread and pruned after the
retention (``log_retention_days``). An audit record: best effort, fenced by erasures.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, date, datetime, timedelta

from mpp.erasure import fence
from mpp.logs import get_logger
from mpp.v1 import recommender_pb2 as R
from mpp_recommender.sources import PostgresSource
from mpp_recommender.telemetry import LOG_ROWS, SERVICE

log = get_logger(__name__)


class RecommendationLog:
    """Writes what was served to ``recommendation_log`` from a background thread, and deletes
    rows older than the retention (``log_retention_days``) at start and every
    ``log_prune_every_s``, in chunks so that no statement holds the table long.

    Best effort: a failed batch is dropped with a warning (the log is an audit record); a
    failed prune is tried again at the next round.

    Fenced (``mpp.erasure.fence``): an answer served at or before its user's erasure is not
    written, even when it was queued before the erasure and is written after it.
    """

    PRUNE_CHUNK = 5000

    def __init__(
        self, postgres: PostgresSource, retention_days: int = 0, prune_every_s: float = 3600.0
    ) -> None:
        self._postgres = postgres
        self._retention_days = retention_days
        self._prune_every_s = prune_every_s
        self._next_prune = time.monotonic()
        self._queue: queue.Queue[tuple[str, R.RecommendResponse] | None] = queue.Queue(100_000)
        self._thread = threading.Thread(target=self._run, name="recommendation-log", daemon=True)
        self._thread.start()

    def prune(self, today: date | None = None) -> int:
        """Delete the rows of days before ``today`` (UTC) minus the retention; returns how
        many. Nothing when the retention is 0 (kept forever)."""
        if self._retention_days <= 0:
            return 0
        cutoff = (today or datetime.now(UTC).date()) - timedelta(days=self._retention_days)
        deleted = 0
        with self._postgres.pool.connection() as conn:
            while True:
                count = conn.execute(
                    "DELETE FROM recommendation_log WHERE ctid = ANY(ARRAY("
                    "SELECT ctid FROM recommendation_log WHERE day < %s LIMIT %s))",
                    (cutoff, self.PRUNE_CHUNK),
                ).rowcount
                deleted += count
                if count < self.PRUNE_CHUNK:
                    break
        if deleted:
            LOG_ROWS.labels(SERVICE, "pruned").inc(deleted)
            log.info("recommendation_log_pruned", rows=deleted, before=cutoff.isoformat())
        return deleted

    def _prune_when_due(self) -> None:
        if self._retention_days <= 0 or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self._prune_every_s
        try:
            self.prune()
        except Exception as exc:
            log.warning("recommendation_log_prune_failed", error=str(exc)[:300])

    def add(self, user_id: str, answer: R.RecommendResponse) -> None:
        try:
            self._queue.put_nowait((user_id, answer))
        except queue.Full:
            LOG_ROWS.labels(SERVICE, "dropped").inc(len(answer.items))

    def flush(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            self._prune_when_due()
            try:
                first = self._queue.get(timeout=min(self._prune_every_s, 60.0))
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get(timeout=0.05))
                except queue.Empty:
                    break
            entries = [b for b in batch if b is not None]
            try:
                if entries:
                    self._write(entries)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if len(entries) < len(batch):
                return

    def _write(self, entries: list[tuple[str, R.RecommendResponse]]) -> None:
        rows = []
        for user_id, answer in entries:
            served = answer.generated_at.ToDatetime(tzinfo=UTC)
            for position, item in enumerate(answer.items):
                rows.append(
                    (
                        answer.recommendation_id,
                        item.campaign_id,
                        user_id,
                        position,
                        item.score,
                        answer.strategy,
                        served,
                        served.date(),
                    )
                )
        if not rows:
            return
        try:
            # COPY: a fraction of executemany's CPU, in the same process as the requests.
            # Rows never conflict: each answer has a new recommendation_id.
            with self._postgres.pool.connection() as conn, conn.transaction():
                erased = fence(conn, {row[2] for row in rows})
                if erased:
                    kept = [r for r in rows if r[2] not in erased or r[6] > erased[r[2]]]
                    LOG_ROWS.labels(SERVICE, "erased").inc(len(rows) - len(kept))
                    rows = kept
                with (
                    conn.cursor() as cur,
                    cur.copy(
                        "COPY recommendation_log (recommendation_id, campaign_id, user_id,"
                        " position, score, strategy, served_at, day) FROM STDIN"
                    ) as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
        except Exception as exc:
            LOG_ROWS.labels(SERVICE, "dropped").inc(len(rows))
            log.warning("recommendation_log_failed", rows=len(rows), error=str(exc))
            return
        LOG_ROWS.labels(SERVICE, "written").inc(len(rows))
