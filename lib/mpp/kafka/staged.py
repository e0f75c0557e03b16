"""Staged handlers: the store's write of one batch overlaps the preparation of the next.

A ``StagedHandler`` (the store writers) splits its work in two: ``prepare`` (decoding, the
dead letters, the rows: CPU in this process) and ``apply`` (the store's writes). The loop then
prepares batch N+1 while the store writes batch N, in a thread of its own: the store's wait
and this process's CPU overlap. Both steps still run one batch at a time and in order. Batch
N+1 waits, prepared, behind batch N's write, and its write starts as soon as N's returned;
the loop commits N then, without holding N+1 back. A write that fails holds back the one
queued behind it until the failed one was retried and committed. So the contract of
``mpp.kafka.loop`` holds unchanged: offsets are committed in order, each once its batch's
write returned, and a crash replays at most the two batches not yet committed. On SIGTERM the
batches already prepared are written and committed too.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from confluent_kafka import Message

from mpp.kafka.retries import RETRYABLE, LoopRecovery


@runtime_checkable
class StagedHandler(Protocol):
    """A handler in two steps that the loop overlaps across batches (see the module's doc).

    ``prepare`` must not write to the handler's store; it may produce (dead letters) and read.
    Either step may raise ``RetryableError``. Calling the handler runs both, one after the
    other, as a plain ``Handler``.
    """

    def prepare(self, batch: list[Message]) -> Any: ...

    def apply(self, prepared: Any) -> None: ...

    def __call__(self, batch: list[Message]) -> None: ...


@dataclass
class _InFlight:
    """A batch whose ``apply`` runs (or waits to run) in the loop's writer thread."""

    batch: list[Message]
    prepared: Any
    started: float
    write: Future[None] = field(default_factory=Future)


# Batches handed to a staged handler's writer thread and not yet committed: the one being
# written and the next one, so that the writer goes on without waiting for this thread.
WRITES_QUEUED = 2


class _Skipped(Exception):
    """A staged write not attempted because a write queued before it failed."""


# ``_prepare_again``'s answer for a batch it settled itself (poison records isolated).
_SETTLED = object()


def _write_in_order(handler: StagedHandler, item: _InFlight, halted: threading.Event) -> None:
    """The writer thread's job: ``apply``, unless an earlier write failed (``halted``); the
    loop then retries that one and writes this one after it, itself."""
    if halted.is_set():
        raise _Skipped
    try:
        handler.apply(item.prepared)
    except BaseException:
        halted.set()
        raise


class StagedLoop(LoopRecovery):
    """``BatchLoop``'s way of running a ``StagedHandler``."""

    def _run_staged(self, handler: StagedHandler) -> None:
        """Write in a thread of its own, one batch after the other, while this thread reads
        and prepares the next batch; commit each batch once its write returned."""
        halted = threading.Event()
        in_flight: deque[_InFlight] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix=f"{self.service}-write") as writer:
            while not self._stop.is_set():
                # At most one write left in flight, so that at most two are once this batch's
                # is queued: the writer starts it as soon as the one before it ends.
                if not self._finish_writes(handler, in_flight, halted, WRITES_QUEUED - 1):
                    return
                batch = self._poll_beside(in_flight[0] if in_flight else None)
                if not batch:
                    continue
                item = _InFlight(batch, None, time.perf_counter())
                try:
                    item.prepared = handler.prepare(batch)
                except Exception as exc:
                    if not isinstance(exc, RETRYABLE) and not self._can_isolate(exc):
                        raise
                    # The earlier batches are committed first, whatever becomes of this one.
                    if not self._finish_writes(handler, in_flight, halted, 0):
                        return
                    done, item.prepared = self._prepare_again(handler, batch, exc)
                    if not done:
                        return
                    if item.prepared is _SETTLED:
                        # Poison records found and dead-lettered, the others written.
                        self._committed(batch, item.started)
                        continue
                item.write = writer.submit(_write_in_order, handler, item, halted)
                in_flight.append(item)
            self._finish_writes(handler, in_flight, halted, 0)

    def _finish_writes(
        self,
        handler: StagedHandler,
        in_flight: deque[_InFlight],
        halted: threading.Event,
        keep: int,
    ) -> bool:
        """Commit the batches whose writes are done, oldest first, waiting for the oldest
        until at most ``keep`` remain (none once a write failed: the writes queued behind it
        are then made here, in order). False when stopped while retrying a write."""
        while in_flight and (len(in_flight) > keep or in_flight[0].write.done() or halted.is_set()):
            if not self._finish(handler, in_flight.popleft()):
                return False
        if not in_flight:
            halted.clear()
        return True

    def _poll_beside(self, in_flight: _InFlight | None) -> list[Message]:
        """The next batch; while a write is in flight, only until it is done, so that a quiet
        stream does not hold the written batch's commit for ``max_wait_s``."""
        if in_flight is None:
            return self._poll_batch()
        batch: list[Message] = []
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.batch_size and time.monotonic() < deadline:
            batch += self._poll_batch(self.batch_size - len(batch), timeout_s=0.02)
            if in_flight.write.done():
                break
        return batch

    def _prepare_again(
        self, handler: StagedHandler, batch: list[Message], failure: Exception
    ) -> tuple[bool, Any]:
        """``prepare`` retried after ``failure``: (False, None) when stopped meanwhile. A
        non-retryable failure has the batch settled here, poison isolated and the rest
        written (prepared and applied in this thread): (True, _SETTLED)."""
        prepared: list[Any] = []
        try:
            if not isinstance(failure, RETRYABLE):
                raise failure
            if self._with_retries(lambda: prepared.append(handler.prepare(batch)), batch, failure):
                return True, prepared[-1]
            return False, None
        except Exception as exc:
            if isinstance(exc, RETRYABLE) or not self._can_isolate(exc):
                raise
            return self._isolate(handler, batch, exc), _SETTLED

    def _finish(self, handler: StagedHandler, in_flight: _InFlight) -> bool:
        """Wait for the batch's write (retrying it if it failed), flush, commit. False when
        the loop was stopped while retrying: the batch is not committed."""

        def work() -> None:
            handler.apply(in_flight.prepared)
            self._flush()

        try:
            try:
                in_flight.write.result()
                self._flush()
            except _Skipped:
                # Queued behind a write that failed: written here, after that one.
                if not self._with_retries(work, in_flight.batch):
                    return False
            except RETRYABLE as exc:
                if not self._with_retries(work, in_flight.batch, exc):
                    return False
        except Exception as exc:
            if isinstance(exc, RETRYABLE) or not self._can_isolate(exc):
                raise
            # A poison record in the batch: prepared again and written in halves, here.
            if not self._isolate(handler, in_flight.batch, exc):
                return False
        self._committed(in_flight.batch, in_flight.started)
        return True
