"""A run of the whole streaming path: the four services as real processes.

Used by the demo, the end-to-end tests and the benchmarks. A run's settings say which topics,
consumer groups and Milvus collections it uses; the tests and benchmarks give each run its own,
so runs never see each other's data. ``wait_drained`` is exact: it waits until every service's
consumer group has committed the end of its input topic.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from mpp.codecs import decode
from mpp.config import Settings
from mpp.kafka import LagReader, TrackedProducer
from mpp.stack import repo_root
from mpp.stack.base import pid_alive
from mpp.stack.services import SERVICES, ServiceProcess
from mpp.stores import milvus_client, neo4j_driver
from mpp.tracing import get_tracer, produce_span
from mpp.v1 import events_pb2 as E

# Which topic each service's consumer group reads, to know when the pipeline has drained.
INPUTS = {
    "ingest": "raw",
    "embedder": "validated",
    "vector-writer": "enriched",
    "graph-writer": "enriched",
    "analytics": "enriched",
}
# The streaming path's services: raw events in, both stores written.
STREAMING = ("ingest", "embedder", "vector-writer", "graph-writer")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before by this process: the kernel may
    offer the same free port twice in a row, and two services started one after the other
    then both got it (a bench run saw the vector-writer and graph-writer given one port)."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port left that this process has not handed out")


def world_env(settings: Settings) -> dict[str, str]:
    """The ``MPP_*`` variables that put a service process in the world of ``settings``: its
    topics, consumer groups, database and collections (a test's or a bench's own, so that
    runs side by side do not meet)."""
    topics = settings.kafka.topics
    return {
        **{
            f"MPP_KAFKA__TOPICS__{name.upper()}": getattr(topics, name)
            for name in ("raw", "validated", "enriched", "dlq", "feedback", "erasure")
        },
        "MPP_KAFKA__GROUP_PREFIX": settings.kafka.group_prefix,
        "MPP_POSTGRES__DATABASE": settings.postgres.database,
        "MPP_MILVUS__MESSAGES_COLLECTION": settings.milvus.messages_collection,
        "MPP_MILVUS__CAMPAIGNS_COLLECTION": settings.milvus.campaigns_collection,
    }


def log(message: str) -> None:
    """Progress on stderr, with the time."""
    sys.stderr.write(f"{datetime.now(UTC):%H:%M:%S} {message}\n")
    sys.stderr.flush()


@dataclass
class Pipeline:
    """The services of one end-to-end run; ``settings`` point at this run's topics."""

    settings: Settings
    run_id: str
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    # Ports of this run's own, so that runs never clash with the managed services or each other.
    report_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    _lag_reader: LagReader | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            **world_env(self.settings),
            "MPP_LOG_LEVEL": "INFO",
            "MPP_ANALYTICS__REPORT_PORT": str(self.report_port),
            "MPP_GRPC__PORT": str(self.grpc_port),
            **self.extra_env,
        }

    def start(self, *names: str) -> None:
        for name in names or tuple(SERVICES):
            process = ServiceProcess(
                name, self.settings, self.home, repo_root(), port=free_port(), extra_env=self.env
            )
            self.processes[name] = process
            process.launch(lambda m: log(m))
        deadline = time.monotonic() + 180
        for name in names or tuple(SERVICES):
            self.processes[name].wait_ready(None, deadline)
        # A port's answer alone is not enough: another process may be the one answering.
        dead = [name for name in names or SERVICES if self.processes[name].owned_pid() is None]
        if dead:
            raise RuntimeError(
                f"exited after their port answered: {', '.join(dead)} (logs: "
                + ", ".join(str(self.processes[name].log_file) for name in dead)
                + ")"
            )
        log(f"services ready: {', '.join(names or SERVICES)}")

    def kill(self, name: str) -> None:
        pid = self.processes[name].owned_pid()
        assert pid is not None, f"{name} is not running"
        os.killpg(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)
        log(f"{name}: killed (SIGKILL) pid {pid}")

    def stop(self) -> None:
        for name in SERVICES:
            if name in self.processes:
                self.processes[name].stop(lambda m: log(m))

    def produce(self, records: list[bytes], keys: list[bytes | None], rate: float = 0) -> None:
        producer = TrackedProducer(self.settings.kafka, service="e2e")
        topic = self.settings.kafka.topics.raw
        # With tracing on (OTEL_* in this process), each event starts its own trace here.
        tracer = get_tracer(__name__)
        started = time.monotonic()
        for index, (key, value) in enumerate(zip(keys, records, strict=True)):
            with produce_span(tracer, topic):
                producer.produce(topic, value, key=key)
            if rate and index % 50 == 0:
                ahead = index / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()

    # -- observing the outcome --------------------------------------------------------------

    def lag(self) -> dict[str, int]:
        """Records each service has not yet committed."""
        kafka = self.settings.kafka
        if self._lag_reader is None:
            self._lag_reader = LagReader(kafka)
        return self._lag_reader.lags(
            {
                name: (f"{kafka.group_prefix}-{name}", getattr(kafka.topics, field))
                for name, field in INPUTS.items()
                if not self.processes or name in self.processes
            }
        )

    def wait_drained(self, timeout_s: float = 900, poll_s: float = 0.2) -> float:
        """Until every running service has committed everything on its input topic.

        The lag must read zero twice in a row, ``poll_s`` apart. Returns the
        ``time.perf_counter()`` of the first of those readings: when the pipeline was seen
        drained (the benchmark's end of run).
        """
        deadline = time.monotonic() + timeout_s
        drained_at: float | None = None
        last_report = 0.0
        while time.monotonic() < deadline:
            checked_at = time.perf_counter()
            lag = self.lag()
            if any(lag.values()):
                drained_at = None
            elif drained_at is None:
                drained_at = checked_at
            else:
                return drained_at
            if time.monotonic() - last_report > 10:
                log(f"waiting for the pipeline to drain; lag by service: {lag}")
                last_report = time.monotonic()
            time.sleep(poll_s)
        raise AssertionError(f"pipeline did not drain in {timeout_s}s: {self.lag()}")

    def milvus_count(self) -> int:
        client = milvus_client(self.settings)
        rows = client.query(
            self.settings.milvus.messages_collection, filter="", output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"])

    def graph_counts(self) -> dict[str, int]:
        with neo4j_driver(self.settings) as driver:
            records, _, _ = driver.execute_query(
                """
                MATCH (u:User) WHERE u.id STARTS WITH $prefix
                OPTIONAL MATCH (u)-[s:SENT]->(m:Message)
                RETURN count(DISTINCT u) AS users, count(DISTINCT m) AS messages,
                       count(s) AS sent
                """,
                prefix=self.run_id,
            )
        return dict(records[0])

    def dead_letters(self, timeout_s: float = 10) -> list[E.DeadLetter]:
        topic = self.settings.kafka.topics.dlq
        consumer = Consumer(
            {
                **self.settings.kafka.client_config(),
                "group.id": f"dlq-reader-{time.monotonic_ns()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for p in parts:
            ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[E.DeadLetter] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < sum(ends.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    out.append(decode(E.DeadLetter, msg.value()))
        consumer.close()
        return out

    def cleanup(self) -> None:
        if self._lag_reader is not None:
            self._lag_reader.close()
            self._lag_reader = None
        client = milvus_client(self.settings)
        for name in (
            self.settings.milvus.messages_collection,
            self.settings.milvus.campaigns_collection,
        ):
            if client.has_collection(name):
                client.drop_collection(name)
        with neo4j_driver(self.settings) as driver:
            driver.execute_query(
                """
                MATCH (u:User) WHERE u.id STARTS WITH $prefix
                OPTIONAL MATCH (u)-[:SENT]->(m:Message)
                DETACH DELETE u, m
                """,
                prefix=self.run_id,
            )
