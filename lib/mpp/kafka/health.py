"""Whether a Kafka client reaches the brokers: the readiness signal a consumer cannot give."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from mpp.logs import get_logger

# The package's one logger name, as before it was split into modules.
log = get_logger("mpp.kafka")


class BrokerHealth:
    """Whether a client reaches Kafka, from its statistics and error callbacks.

    librdkafka reports every broker connection's state in its statistics (every
    ``statistics.interval.ms``) and raises ``_ALL_BROKERS_DOWN`` as soon as none answers. A
    consumer that was given its partitions keeps them while Kafka is away, so that alone
    cannot tell readiness.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_since: float | None = None
        self._reason = ""

    def on_stats(self, stats: dict[str, Any]) -> None:
        brokers = [
            b
            for b in stats.get("brokers", {}).values()
            if b.get("source") in ("configured", "learned")
        ]
        if not brokers:
            return
        if any(b.get("state") == "UP" for b in brokers):
            self._down_since = None
        else:
            states = sorted({f"{b.get('name', '?')} {b.get('state', '?')}" for b in brokers})
            self.down(", ".join(states)[:300])

    def on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.down(error.str())

    def down(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning("kafka_unreachable", reason=reason)
        self._reason = reason

    def problem(self) -> str | None:
        """None while Kafka is reachable, else why not."""
        if self._down_since is None:
            return None
        return f"kafka unreachable for {self._clock() - self._down_since:.0f}s: {self._reason}"
