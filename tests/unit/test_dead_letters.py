"""Dead letters under the DLQ's size limit, and the batch loop's safety net for poison records.

No server: the loop's consumer is made but never subscribed, its commits are recorded here.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from mpp.codecs import Rejection, decode
from mpp.config import KafkaSettings
from mpp.deadletters import (
    KEY_PREFIX_BYTES,
    MAX_DETAIL_CHARS,
    DeadLetters,
    dead_letter,
    record_size,
    rejection_of,
)
from mpp.kafka import (
    BatchLoop,
    BrokerHealth,
    RecordRefused,
    RetryableError,
    TrackedProducer,
    testing,
)
from mpp.service import Worker, loop_readiness
from mpp.v1 import events_pb2 as E

# Nothing listens there: clients are made, nothing is ever delivered.
NOWHERE = KafkaSettings(bootstrap_servers="127.0.0.1:9")
LIMIT = 900_000
# Those clients would log every failed connection to stderr.
QUIET: dict[str, Any] = {"log_level": 0}


class ListSink(testing.ListSink):
    def dead(self) -> list[E.DeadLetter]:
        return [decode(E.DeadLetter, value) for _, value, _ in self.records]


def record(value: bytes, offset: int = 0, key: bytes | None = b"user-1", **kw: Any) -> Message:
    return Message(topic="raw", partition=2, offset=offset, key=key, value=value, **kw)


REASON = Rejection(E.ERROR_CODE_MESSAGE_TOO_LONG, "message", "message has 999999 characters")


# -- the size rule ---------------------------------------------------------------------------


def test_a_record_under_the_limit_is_kept_whole() -> None:
    msg = record(b'{"user_id": "u"}', offset=7, headers=[("trace", b"abc")])
    dead = dead_letter(msg, REASON, "ingest", LIMIT)
    assert not dead.HasField("truncated")
    assert dead.original_value == b'{"user_id": "u"}'
    assert dead.original_key == b"user-1"
    assert dict(dead.original_headers) == {"trace": "abc"}


@pytest.mark.parametrize("value_size", [LIMIT - 20, 1_048_000, 5_000_000])
def test_a_record_near_or_over_the_limit_keeps_a_prefix_its_size_and_hash(value_size: int) -> None:
    value = bytes(range(256)) * (value_size // 256 + 1)
    value = value[:value_size]
    msg = record(value, offset=41, headers=[("h", b"v")])
    dead = dead_letter(msg, REASON, "ingest", LIMIT)
    assert record_size(dead) <= LIMIT
    assert dead.HasField("truncated")
    assert dead.truncated.value_size == value_size
    assert dead.truncated.value_sha256 == hashlib.sha256(value).digest()
    assert value.startswith(dead.original_value)
    # Most of the room goes to the prefix.
    assert len(dead.original_value) > LIMIT - 10_000
    # The reason and the source position are whole.
    assert (dead.code, dead.field, dead.detail) == (REASON.code, REASON.field, REASON.detail)
    assert (dead.source.topic, dead.source.partition, dead.source.offset) == ("raw", 2, 41)
    assert dead.service == "ingest"


def test_a_huge_key_and_headers_are_cut_too() -> None:
    key = b"k" * 600_000
    headers = [(f"h{i}", b"x" * 10_000) for i in range(50)]
    msg = record(b"v" * 600_000, key=key, headers=headers)
    dead = dead_letter(msg, REASON, "ingest", LIMIT)
    assert record_size(dead) <= LIMIT
    assert dead.original_key == key[:KEY_PREFIX_BYTES]
    assert dead.truncated.key_size == len(key)
    assert dead.truncated.key_sha256 == hashlib.sha256(key).digest()
    assert dead.truncated.headers_dropped + len(dead.original_headers) == 50
    assert dead.truncated.headers_dropped > 0


def test_a_long_reason_is_cut_and_the_smallest_limit_holds() -> None:
    reason = Rejection(E.ERROR_CODE_SCHEMA_INVALID, "metadata." + "k" * 5000, "d" * 50_000)
    msg = record(b"v" * 100_000, key=b"k" * 5000, headers=[("h", b"x" * 8000)] * 3)
    dead = dead_letter(msg, reason, "ingest", 16_384)
    assert record_size(dead) <= 16_384
    assert len(dead.detail) == MAX_DETAIL_CHARS
    assert dead.field.startswith("metadata.k")


def test_the_dead_letters_sink_sends_within_the_settings_limit() -> None:
    sink = ListSink()
    settings = KafkaSettings(dead_letter_max_bytes=50_000)
    DeadLetters.of(settings, sink, "ingest").send(record(b"x" * 200_000), REASON)
    ((topic, value, key),) = sink.records
    assert topic == settings.topics.dlq
    assert len(value) + len(key or b"") <= 50_000
    assert key == b"user-1"


def test_kafka_itself_takes_the_dead_letter_of_a_record_at_its_size_limit() -> None:
    """librdkafka checks message.max.bytes (1,000,000) when a record is produced: the dead
    letter of a near-limit event is accepted, the whole event with its reason is not."""
    producer = TrackedProducer(NOWHERE, "unit", log_level=0)
    value = b"y" * 999_950
    producer.produce("raw", value, key=b"user-1")  # the event itself fits
    dead = dead_letter(record(value), REASON, "ingest")
    producer.produce("dlq", dead.SerializeToString(), key=dead.original_key)
    whole = dead_letter(record(value), REASON, "ingest", max_bytes=10**9)
    assert not whole.HasField("truncated")
    with pytest.raises(RecordRefused, match="refused"):
        producer.produce("dlq", whole.SerializeToString(), key=b"user-1")
    producer._producer.purge()  # nothing is ever delivered there


def test_an_exception_becomes_processing_failed_with_its_type() -> None:
    rejection = rejection_of(ZeroDivisionError("division by zero"))
    assert rejection.code == E.ERROR_CODE_PROCESSING_FAILED
    assert rejection.detail == "ZeroDivisionError: division by zero"
    assert rejection_of(REASON) is REASON
    assert "refused by Kafka" in rejection_of(RecordRefused("too big")).detail


# -- the safety net --------------------------------------------------------------------------


class Poisoned:
    """A handler that raises on any batch holding a poison record; records what it handled."""

    def __init__(
        self, poison: set[int], error: Callable[[], Exception] = lambda: ValueError("bad")
    ):
        self.poison = poison
        self.error = error
        self.calls = 0
        self.done: list[int] = []

    def __call__(self, batch: list[Message]) -> None:
        self.calls += 1
        offsets = [m.offset() for m in batch]
        if any(o in self.poison for o in offsets):
            raise self.error()
        self.done += [o for o in offsets if o is not None]


def make_loop(handler: Any, sink: ListSink | None, **kw: Any) -> tuple[BatchLoop, list[int]]:
    dead_letters = DeadLetters.of(NOWHERE, sink, "unit") if sink is not None else None
    loop = BatchLoop(
        NOWHERE,
        "unit",
        "unit-group",
        ["raw"],
        handler,
        dead_letter=dead_letters.send_failure if dead_letters else None,
        max_backoff_s=0.05,
        consumer_overrides=QUIET,
        **kw,
    )
    committed: list[int] = []

    def commit(batch: list[Message]) -> dict[str, int]:
        committed.extend(m.offset() or 0 for m in batch)
        return {}

    loop._commit = commit  # type: ignore[method-assign]
    return loop, committed


def batch_of(n: int) -> list[Message]:
    return [record(f"r{i}".encode(), offset=i) for i in range(n)]


@pytest.mark.parametrize("poison", [{0}, {17}, {99}, {3, 4, 50}, set(range(100))])
def test_poison_records_are_dead_lettered_and_every_other_record_processed(
    poison: set[int],
) -> None:
    sink, handler = ListSink(), Poisoned(poison)
    loop, committed = make_loop(handler, sink)
    loop._process(batch_of(100))
    assert handler.done == [i for i in range(100) if i not in poison]  # in order, once each
    dead = sink.dead()
    assert sorted(d.source.offset for d in dead) == sorted(poison)
    assert all(d.code == E.ERROR_CODE_PROCESSING_FAILED for d in dead)
    assert all(d.detail == "ValueError: bad" and d.source.topic == "raw" for d in dead)
    assert committed == list(range(100))
    assert loop.stats.isolated == len(poison)
    if len(poison) == 1:
        # About 2 log2(n) handler calls more than the one that failed.
        assert handler.calls <= 2 + 2 * 7


def test_without_a_dead_letter_sink_or_for_a_fatal_error_the_loop_stops() -> None:
    loop, committed = make_loop(Poisoned({5}), None)
    with pytest.raises(ValueError):
        loop._process(batch_of(10))
    assert committed == []

    class Fatal(RuntimeError):
        pass

    sink = ListSink()
    loop, committed = make_loop(Poisoned({5}, lambda: Fatal("wrong model")), sink, fatal=(Fatal,))
    with pytest.raises(Fatal):
        loop._process(batch_of(10))
    assert committed == [] and sink.records == []


def test_a_store_down_is_retried_not_dead_lettered() -> None:
    failures = [RetryableError("store down")] * 2

    def handler(batch: list[Message]) -> None:
        if failures:
            raise failures.pop()

    sink = ListSink()
    loop, committed = make_loop(handler, sink)
    loop._process(batch_of(10))
    assert sink.records == []
    assert loop.stats.retries == 2
    assert committed == list(range(10))


def test_a_poison_record_beside_a_store_outage() -> None:
    """The halves are retried while the store is down; the poison is still isolated."""
    outages = [RetryableError("down")] * 3
    poisoned = Poisoned({6})

    def handler(batch: list[Message]) -> None:
        if len(batch) < 10 and outages:
            raise outages.pop()
        poisoned(batch)

    sink = ListSink()
    loop, committed = make_loop(handler, sink)
    loop._process(batch_of(10))
    assert poisoned.done == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert [d.source.offset for d in sink.dead()] == [6]
    assert committed == list(range(10))


class Staged:
    """A StagedHandler whose prepare or apply raises on a poison record."""

    def __init__(self, poison: set[int], step: str) -> None:
        self.poison = poison
        self.step = step
        self.written: list[int] = []
        self.lock = threading.Lock()

    def _check(self, batch: list[int], step: str) -> None:
        if step == self.step and self.poison & set(batch):
            raise KeyError(f"poison in {step}")

    def prepare(self, batch: list[Message]) -> list[int]:
        offsets = [m.offset() or 0 for m in batch]
        self._check(offsets, "prepare")
        return offsets

    def apply(self, prepared: list[int]) -> None:
        self._check(prepared, "apply")
        with self.lock:
            self.written += prepared

    def __call__(self, batch: list[Message]) -> None:
        self.apply(self.prepare(batch))


@pytest.mark.parametrize("step", ["prepare", "apply"])
def test_the_staged_loop_isolates_poison_in_either_step(step: str) -> None:
    handler, sink = Staged({12, 31}, step), ListSink()
    loop, committed = make_loop(handler, sink)
    batches = [batch_of(40)[i : i + 10] for i in range(0, 40, 10)]

    def poll(*_: Any, **__: Any) -> list[Message]:
        if batches:
            return batches.pop(0)
        loop.stop()
        return []

    loop._poll_batch = poll  # type: ignore[method-assign]
    loop._run_staged(handler)
    assert handler.written == [i for i in range(40) if i not in (12, 31)]
    assert sorted(d.source.offset for d in sink.dead()) == [12, 31]
    assert all(d.detail.startswith("KeyError:") for d in sink.dead())
    assert committed == list(range(40))


# -- readiness -------------------------------------------------------------------------------


def stats(*states: str) -> dict[str, Any]:
    brokers = {
        f"b{i}": {"name": f"b{i}", "state": s, "source": "learned"} for i, s in enumerate(states)
    }
    brokers["GroupCoordinator"] = {"name": "GroupCoordinator", "state": "UP", "source": "logical"}
    return {"brokers": brokers}


def test_broker_health_follows_the_statistics_and_the_errors() -> None:
    now = [100.0]
    health = BrokerHealth(clock=lambda: now[0])
    assert health.problem() is None
    health.on_stats(stats("UP", "DOWN"))
    assert health.problem() is None
    health.on_stats(stats("DOWN", "CONNECT"))
    now[0] += 12
    problem = health.problem()
    assert problem is not None and problem.startswith("kafka unreachable for 12s")
    health.on_stats(stats("UP"))
    assert health.problem() is None
    health.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert "brokers are down" in (health.problem() or "")
    health.on_error(KafkaError(KafkaError._TRANSPORT, "one connection reset"))
    health.on_stats(stats("UP"))
    assert health.problem() is None


def test_readyz_says_not_ready_while_kafka_cannot_be_reached() -> None:
    """A loop pointed at a port where no broker listens: its readiness names Kafka."""
    loop = BatchLoop(
        NOWHERE,
        "unit",
        "unit-group",
        ["raw"],
        lambda batch: None,
        max_wait_s=0.1,
        consumer_overrides=QUIET,
    )
    readiness = loop_readiness(loop, Worker("unit", ["raw"], lambda batch: None, 1, 0.1))
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while loop.broker_health.problem() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        reason = readiness()
        assert reason is not None and reason.startswith("kafka unreachable"), reason
    finally:
        loop.stop()
        thread.join(30)
    # Once assigned, only Kafka's state decides: partitions kept while Kafka is away.
    loop._assigned.set()
    loop.broker_health.on_stats(stats("UP"))
    assert readiness() is None
    loop.broker_health.on_stats(json.loads(json.dumps(stats("DOWN"))))
    assert readiness() is not None
