"""The store metrics (docs/metrics.md) against the real servers: every call counted with its
outcome and timed, the rows a write or an erasure touched, and a store that is down counted as
errors and named as the cause of the retry."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from mpp.config import Settings
from mpp.erasure import ErasureLedger
from mpp.kafka import RetryableError, retry_cause
from mpp.observability import service_name, set_service
from mpp.pipeline import free_port
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from tests.conftest import with_database

from .helpers import drop_collections, graph_rows, message_rows, milvus_settings


@pytest.fixture
def service(unique: str) -> Iterator[str]:
    """A service name of this test's own, so that its series start at zero."""
    before = service_name()
    name = f"metrics-{unique}"
    set_service(name)
    yield name
    set_service(before)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def calls(service: str, store: str, operation: str, outcome: str) -> float:
    return value(
        "mpp_store_operations_total",
        service=service,
        store=store,
        operation=operation,
        outcome=outcome,
    )


def timed(service: str, store: str, operation: str) -> float:
    return value(
        "mpp_store_operation_duration_seconds_count",
        service=service,
        store=store,
        operation=operation,
    )


def failed(service: str, store: str) -> dict[str, float]:
    """operation -> calls with outcome error, for one store."""
    return {
        sample.labels["operation"]: sample.value
        for family in REGISTRY.collect()
        if family.name == "mpp_store_operations"
        for sample in family.samples
        if sample.name == "mpp_store_operations_total"
        and sample.labels["service"] == service
        and sample.labels["store"] == store
        and sample.labels["outcome"] == "error"
    }


def rows(service: str, store: str, operation: str) -> float:
    return value("mpp_store_rows_total", service=service, store=store, operation=operation)


def test_milvus_upserts_and_erasures_are_counted(
    stack_settings: Settings, unique: str, service: str
) -> None:
    settings = milvus_settings(stack_settings, unique)
    store = MilvusVectorStore(settings)
    try:
        assert store.upsert_messages(message_rows(6, users=2, tag=unique)) == 6
        assert store.upsert_messages(message_rows(6, users=2, tag=unique)) == 6  # a replay
        removed = store.delete_user(f"{unique}-u0")
    finally:
        drop_collections(settings)
    assert removed == 3
    assert calls(service, "milvus", "upsert_messages", "ok") == 2
    assert timed(service, "milvus", "upsert_messages") == 2
    assert rows(service, "milvus", "upsert_messages") == 12
    assert rows(service, "milvus", "delete_user") == 3
    assert calls(service, "milvus", "upsert_messages", "error") == 0


def test_neo4j_merges_and_erasures_are_counted(
    stack_settings: Settings, unique: str, service: str
) -> None:
    store = Neo4jGraphStore(stack_settings)
    try:
        assert store.merge_messages(graph_rows(unique, 8, users=2)) == 8
        removed = store.delete_user(f"{unique}-u1")
        store.delete_user(f"{unique}-u0")
    finally:
        store.close()
    assert removed == 4
    assert calls(service, "neo4j", "merge_messages", "ok") == 1
    assert rows(service, "neo4j", "merge_messages") == 8
    assert calls(service, "neo4j", "delete_user", "ok") == 2
    assert rows(service, "neo4j", "delete_user") == 8


def test_the_erasure_ledger_calls_are_counted(
    stack_settings: Settings, unique: str, service: str
) -> None:
    with with_database(stack_settings, unique) as settings:
        ledger = ErasureLedger(settings)
        try:
            ledger.record({f"{unique}-u": (f"req-{unique}", datetime.now(UTC))})
            assert set(ledger.erased_at([f"{unique}-u", f"{unique}-other"])) == {f"{unique}-u"}
        finally:
            ledger.close()
    assert calls(service, "postgres", "record_erasures", "ok") == 1
    assert calls(service, "postgres", "read_erasures", "ok") == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_store_that_is_down_counts_errors_and_is_the_retry_cause(
    stack_settings: Settings, unique: str, service: str
) -> None:
    milvus = MilvusVectorStore(
        milvus_settings(stack_settings, unique, uri=f"http://127.0.0.1:{free_port()}")
    )
    with pytest.raises(RetryableError) as milvus_down:
        milvus.upsert_messages(message_rows(2, users=1, tag=unique))
    neo4j_cfg = stack_settings.neo4j.model_copy(
        update={"uri": f"bolt://127.0.0.1:{_closed_port()}", "max_transaction_retry_time_s": 1.0}
    )
    neo4j = Neo4jGraphStore(stack_settings.model_copy(update={"neo4j": neo4j_cfg}))
    with pytest.raises(RetryableError) as neo4j_down:
        neo4j.merge_messages(graph_rows(unique, 2, users=1))
    postgres_cfg = stack_settings.postgres.model_copy(update={"port": _closed_port()})
    ledger = ErasureLedger(stack_settings.model_copy(update={"postgres": postgres_cfg}))
    with pytest.raises(RetryableError) as postgres_down:
        ledger.erased_at([f"{unique}-u"])
    assert [retry_cause(e.value) for e in (milvus_down, neo4j_down, postgres_down)] == [
        "milvus",
        "neo4j",
        "postgres",
    ]
    # Each write fails at its first call: ensuring the collections, the schema.
    assert failed(service, "milvus") == {"ensure_collections": 1}
    assert failed(service, "neo4j") == {"ensure_schema": 1}
    assert failed(service, "postgres") == {"read_erasures": 1}
    assert calls(service, "milvus", "upsert_messages", "ok") == 0
    assert rows(service, "milvus", "upsert_messages") == 0
