"""The producer every service writes with: idempotent, and loud about what it lost.

``TrackedProducer.flush`` raises when a record produced since the last flush was not
acknowledged (``DeliveryError``: retryable, the batch is produced again) or refused for good
(``RecordRefused``: the loop's safety net dead-letters the input record that made it). A
service produces its outputs, flushes, and only then commits its input offsets.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from mpp.config import KafkaSettings
from mpp.errors import DeliveryError, RecordRefused
from mpp.observability import RECORDS_PRODUCED
from mpp.tracing import inject_headers

__all__ = ["DeliveryError", "RecordRefused", "Sink", "TrackedProducer"]

# Headers as confluent-kafka's typing spells them.
_Headers = list[tuple[str, str | bytes | None]]

# Delivery errors that no retry gets past: the record itself is refused.
_REFUSED = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD})


class Sink(Protocol):
    """What a handler produces into: a TrackedProducer, or a list-backed fake in unit tests."""

    def produce(self, topic: str, value: bytes, key: bytes | str | None = None) -> None: ...


class TrackedProducer:
    """An idempotent producer whose ``flush`` raises if any record since the last flush failed.

    A service produces its outputs, flushes, and only then commits its input offsets. Each
    record carries the trace context of the span current when it is produced
    (``mpp.tracing.inject_headers``), so the consumer's span continues the same trace.
    """

    def __init__(self, settings: KafkaSettings, service: str, **overrides: Any) -> None:
        conf: dict[str, Any] = {
            **settings.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": 120_000,
        }
        conf.update(overrides)
        self._producer = Producer(conf)
        self._service = service
        self._failures: list[str] = []
        self._refused: list[str] = []
        self._lock = threading.Lock()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                failures = self._refused if err.code() in _REFUSED else self._failures
                failures.append(f"{msg.topic()}: {err.str()}")
        else:
            RECORDS_PRODUCED.labels(self._service, msg.topic()).inc()

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    # The current span's W3C context (none while tracing is off).
                    headers=cast(_Headers, inject_headers(headers)),
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                # Local queue full: back-pressure, wait for deliveries instead of failing.
                self._producer.poll(0.1)
            except KafkaException as exc:
                if exc.args[0].code() in _REFUSED:
                    size = len(value) + len(key.encode() if isinstance(key, str) else key or b"")
                    raise RecordRefused(
                        f"{topic}: a record of {size} bytes is refused: {exc.args[0].str()}"
                    ) from exc
                raise

    def flush(self, timeout_s: float = 60.0) -> None:
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            failures, self._failures = self._failures, []
            refused, self._refused = self._refused, []
        if refused:
            raise RecordRefused(
                f"{len(refused)} record(s) refused: {'; '.join(sorted(set(refused))[:5])}"
            )
        if remaining:
            raise DeliveryError(f"{remaining} record(s) not delivered within {timeout_s}s")
        if failures:
            raise DeliveryError(
                f"{len(failures)} record(s) failed: {'; '.join(sorted(set(failures))[:5])}"
            )
