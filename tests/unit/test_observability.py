import json
import urllib.error
import urllib.request

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY

from mpp.config import KafkaSettings
from mpp.kafka import BatchLoop, DeliveryError, RetryableError, retry_cause
from mpp.observability import (
    CONSUMER_LAG,
    RECORDS_CONSUMED,
    HealthServer,
    service_name,
    set_service,
    store_operation,
    store_rows,
)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("reason", [None, "kafka: no partitions assigned yet"])
def test_health_endpoints(reason: str | None) -> None:
    server = HealthServer("127.0.0.1", 0, lambda: reason).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert _get(base + "/healthz") == (200, '{"status":"ok"}')
        code, body = _get(base + "/readyz")
        if reason is None:
            assert (code, json.loads(body)) == (200, {"status": "ready"})
        else:
            assert code == 503
            assert json.loads(body) == {"status": "not_ready", "reason": reason}
        topic = f"t{server.port}"
        RECORDS_CONSUMED.labels("unit", topic).inc(3)
        code, metrics = _get(base + "/metrics")
        assert code == 200
        assert f'mpp_records_consumed_total{{service="unit",topic="{topic}"}} 3.0' in metrics
        assert _get(base + "/nope")[0] == 404
    finally:
        server.stop()


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_store_operation_counts_outcomes_and_times_each_call() -> None:
    labels = {"service": "unit-store", "store": "milvus", "operation": "upsert_messages"}
    with store_operation("milvus", "upsert_messages", service="unit-store"):
        pass
    with (
        pytest.raises(RetryableError),
        store_operation("milvus", "upsert_messages", service="unit-store"),
    ):
        raise RetryableError("milvus upsert_messages: down", "milvus")
    store_rows("milvus", "upsert_messages", 7, service="unit-store")
    assert _sample("mpp_store_operations_total", {**labels, "outcome": "ok"}) == 1
    assert _sample("mpp_store_operations_total", {**labels, "outcome": "error"}) == 1
    assert _sample("mpp_store_operation_duration_seconds_count", labels) == 2
    assert _sample("mpp_store_rows_total", labels) == 7


def test_store_series_take_the_process_service_by_default() -> None:
    before = service_name()
    set_service("unit-default")
    try:
        store_rows("neo4j", "merge_messages", 3)
    finally:
        set_service(before)
    labels = {"service": "unit-default", "store": "neo4j", "operation": "merge_messages"}
    assert _sample("mpp_store_rows_total", labels) == 3


def test_retry_cause_names_the_store_or_kafka() -> None:
    assert retry_cause(RetryableError("neo4j merge_messages: gone", "neo4j")) == "neo4j"
    assert retry_cause(RetryableError("something")) == "unknown"
    assert retry_cause(DeliveryError("1 record(s) not delivered")) == "kafka"


def test_a_revoked_partition_stops_reporting_its_lag() -> None:
    """After a rebalance the new owner reports the partition's lag; the old one's series goes,
    or the alert's sum across replicas would count it twice."""
    loop = BatchLoop(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"), "unit-lag", "g", ["t"], lambda b: None
    )
    CONSUMER_LAG.labels("unit-lag", "t", "0").set(40)
    CONSUMER_LAG.labels("unit-lag", "t", "1").set(2)
    lag = {"service": "unit-lag", "topic": "t"}
    loop._on_revoke(None, [TopicPartition("t", 0), TopicPartition("t", 7)])
    assert REGISTRY.get_sample_value("mpp_consumer_lag_records", {**lag, "partition": "0"}) is None
    assert _sample("mpp_consumer_lag_records", {**lag, "partition": "1"}) == 2
