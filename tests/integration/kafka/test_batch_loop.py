"""The shared consume-process-commit loop on a real broker."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from mpp.config import Settings
from mpp.kafka import BatchLoop, LagReader, RetryableError, TrackedProducer, group_lag
from tests.loops import committed, run_until


def _topic_with_records(settings: Settings, name: str, count: int) -> None:
    admin = AdminClient(settings.kafka.client_config())
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result(30)
    producer = TrackedProducer(settings.kafka, service="test")
    for i in range(count):
        producer.produce(name, value=str(i).encode(), key=f"u{i % 4}")
    producer.flush()


def test_commits_after_the_batch_and_resumes_there(stack_settings: Settings, unique: str) -> None:
    topic, group = f"loop.{unique}", f"loop-{unique}"
    _topic_with_records(stack_settings, topic, 200)
    seen: list[bytes] = []

    def handler(batch: list[Message]) -> None:
        seen.extend(m.value() or b"" for m in batch)

    with LagReader(stack_settings.kafka) as reader:
        watched = {"ours": (group, topic), "idle": (f"idle-{unique}", topic)}
        # A group that never committed lags by the whole topic.
        assert reader.lags(watched) == {"ours": 200, "idle": 200}
        loop = BatchLoop(stack_settings.kafka, "test", group, [topic], handler, batch_size=50)
        run_until(loop, lambda: len(seen) >= 200)
        assert sorted(int(v) for v in seen) == list(range(200))
        assert committed(stack_settings.kafka, topic, group) == 200
        # The same reader, asked again, sees the commits.
        assert reader.lags(watched) == {"ours": 0, "idle": 200}
        # A topic that does not exist has nothing to lag behind.
        assert reader.lags({"none": (group, f"missing.{unique}")}) == {"none": 0}
    assert group_lag(stack_settings.kafka, group, topic) == 0
    assert loop.stats.batches >= 4

    # A new member of the same group starts after the commits: nothing is read twice.
    again: list[bytes] = []
    loop2 = BatchLoop(
        stack_settings.kafka,
        "test",
        group,
        [topic],
        lambda b: again.extend(m.value() or b"" for m in b),
    )
    run_until(loop2, lambda: loop2.ready, timeout_s=30)
    time.sleep(1.0)
    assert again == []


def test_retryable_failure_retries_the_same_batch_without_committing(
    stack_settings: Settings, unique: str
) -> None:
    topic, group = f"loop.{unique}", f"loop-{unique}"
    _topic_with_records(stack_settings, topic, 30)
    attempts: list[int] = []
    committed_during_outage: list[int] = []
    handled: list[bytes] = []

    def handler(batch: list[Message]) -> None:
        attempts.append(len(batch))
        if len(attempts) <= 2:
            committed_during_outage.append(committed(stack_settings.kafka, topic, group))
            raise RetryableError("store down")
        handled.extend(m.value() or b"" for m in batch)

    loop = BatchLoop(
        stack_settings.kafka,
        "test",
        group,
        [topic],
        handler,
        batch_size=1000,
        max_wait_s=1.0,
        max_backoff_s=0.5,
    )
    run_until(loop, lambda: len(handled) >= 30)
    assert committed_during_outage == [0, 0]
    assert loop.stats.retries == 2
    # The retried batch is the same records, and nothing was skipped or duplicated.
    assert sorted(int(v) for v in handled) == list(range(30))
    assert committed(stack_settings.kafka, topic, group) == 30


def test_a_crash_commits_nothing_and_the_batch_is_read_again(
    stack_settings: Settings, unique: str
) -> None:
    topic, group = f"loop.{unique}", f"loop-{unique}"
    _topic_with_records(stack_settings, topic, 20)

    def broken(batch: list[Message]) -> None:
        raise ValueError("bug in the handler")

    loop = BatchLoop(stack_settings.kafka, "test", group, [topic], broken, max_wait_s=1.0)
    with pytest.raises(ValueError, match="bug in the handler"):
        loop.run()
    assert committed(stack_settings.kafka, topic, group) == 0

    handled: list[bytes] = []
    loop2 = BatchLoop(
        stack_settings.kafka,
        "test",
        group,
        [topic],
        lambda b: handled.extend(m.value() or b"" for m in b),
    )
    run_until(loop2, lambda: len(handled) >= 20)
    assert sorted(int(v) for v in handled) == list(range(20))


def test_stop_during_an_outage_exits_without_committing(
    stack_settings: Settings, unique: str
) -> None:
    topic, group = f"loop.{unique}", f"loop-{unique}"
    _topic_with_records(stack_settings, topic, 10)
    attempts: list[int] = []

    def always_down(batch: list[Message]) -> None:
        attempts.append(len(batch))
        raise RetryableError("store down")

    loop = BatchLoop(
        stack_settings.kafka,
        "test",
        group,
        [topic],
        always_down,
        max_wait_s=1.0,
        max_backoff_s=30.0,
    )
    thread = threading.Thread(target=loop.run)
    thread.start()
    deadline = time.monotonic() + 30
    while len(attempts) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped_at = time.monotonic()
    loop.stop()
    thread.join(15)
    assert not thread.is_alive(), "stop() must end a loop that is backing off"
    assert time.monotonic() - stopped_at < 5
    assert len(attempts) >= 2
    assert committed(stack_settings.kafka, topic, group) == 0


class Staged:
    """A StagedHandler that records what ran when: each batch's ``prepare`` and ``apply``, when
    each write began and ended, and how many batches the loop had committed when it began."""

    def __init__(self, loop_ref: list[BatchLoop], write_s: float = 0.1, failures: int = 0):
        self.loop_ref = loop_ref
        self.write_s = write_s
        self.failures = failures
        self.prepared: list[int] = []
        self.applied: list[int] = []
        self.attempts = 0
        self.committed_at_write: list[int] = []
        self.spans: list[tuple[float, float]] = []
        self.overlaps = 0
        self.prepared_at_failure = 0
        self.writing = threading.Event()
        self.values: list[bytes] = []

    def prepare(self, batch: list[Message]) -> tuple[int, list[bytes]]:
        if self.writing.is_set():
            self.overlaps += 1
        self.prepared.append(len(self.prepared))
        return self.prepared[-1], [m.value() or b"" for m in batch]

    def apply(self, prepared: tuple[int, list[bytes]]) -> None:
        index, values = prepared
        self.attempts += 1
        began, committed_then = time.monotonic(), self.loop_ref[0].stats.batches
        self.writing.set()
        time.sleep(self.write_s)
        self.writing.clear()
        if self.attempts <= self.failures:
            self.prepared_at_failure = self.prepared_at_failure or len(self.prepared)
            raise RetryableError("store down")
        self.spans.append((began, time.monotonic()))
        self.committed_at_write.append(committed_then)
        self.applied.append(index)
        self.values.extend(values)

    def __call__(self, batch: list[Message]) -> None:
        self.apply(self.prepare(batch))


def staged_loop(settings: Settings, topic: str, group: str, handler: Staged) -> BatchLoop:
    loop = BatchLoop(
        settings.kafka,
        "test",
        group,
        [topic],
        handler,
        batch_size=50,
        max_wait_s=1.0,
        max_backoff_s=0.5,
    )
    handler.loop_ref.append(loop)
    return loop


def test_a_staged_handler_prepares_the_next_batch_while_writing_and_commits_in_order(
    stack_settings: Settings, unique: str
) -> None:
    topic, group = f"loop.{unique}", f"loop-{unique}"
    _topic_with_records(stack_settings, topic, 300)
    handler = Staged([])
    loop = staged_loop(stack_settings, topic, group, handler)
    run_until(loop, lambda: len(handler.values) >= 300)
    assert sorted(int(v) for v in handler.values) == list(range(300))
    # One write at a time, in the order the batches were read and prepared: each began after
    # the one before it had returned.
    assert handler.applied == handler.prepared == list(range(len(handler.prepared)))
    assert all(end <= began for (_, end), (began, _) in itertools.pairwise(handler.spans))
    # When batch N's write began, at most the one write before it was not committed yet.
    assert all(n - 1 <= done <= n for n, done in enumerate(handler.committed_at_write))
    # The next batch was prepared while a write was in flight.
    assert handler.overlaps >= 1
    assert committed(stack_settings.kafka, topic, group) == 300


def test_a_staged_write_that_fails_is_retried_without_preparing_again(
    stack_settings: Settings, unique: str
) -> None:
    topic, group = f"loop.{unique}", f"loop-{unique}"
    _topic_with_records(stack_settings, topic, 120)
    handler = Staged([], write_s=0.05, failures=1)
    loop = staged_loop(stack_settings, topic, group, handler)
    run_until(loop, lambda: len(handler.values) >= 120)
    assert loop.stats.retries == 1
    assert handler.attempts == len(handler.applied) + 1
    # The next batch was prepared, and queued for the writer, while the first write failed...
    assert handler.prepared_at_failure >= 2
    # ...and yet each batch was prepared once and written once, in order, nothing lost or
    # doubled: the queued write waited for the failed one to be retried.
    assert handler.applied == handler.prepared
    assert all(end <= began for (_, end), (began, _) in itertools.pairwise(handler.spans))
    assert sorted(int(v) for v in handler.values) == list(range(120))
    assert committed(stack_settings.kafka, topic, group) == 120


def test_stop_writes_and_commits_the_staged_batches_before_exiting(
    stack_settings: Settings, unique: str
) -> None:
    topic, group = f"loop.{unique}", f"loop-{unique}"
    _topic_with_records(stack_settings, topic, 300)
    handler = Staged([], write_s=0.3)
    loop = staged_loop(stack_settings, topic, group, handler)
    # Stopped as soon as the first write is under way: the next batch is prepared by then.
    run_until(loop, lambda: handler.overlaps >= 1)
    assert handler.applied == handler.prepared, "a prepared batch was left unwritten"
    assert 0 < len(handler.values) < 300
    assert committed(stack_settings.kafka, topic, group) == len(handler.values)
