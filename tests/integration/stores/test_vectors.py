"""MilvusVectorStore on the real Milvus Lite server: idempotent upserts, dimensions, erasure."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mpp.config import Settings
from mpp.kafka import RetryableError
from mpp.pipeline import free_port
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.milvus_errors import DimensionMismatchError
from mpp.stores.vector_rows import CampaignVector

from .helpers import (
    drop_collections,
    eventually,
    message_rows,
    milvus_settings,
    private_milvus,
    unit_vectors,
)


@pytest.fixture
def store_settings(stack_settings: Settings, unique: str) -> Iterator[Settings]:
    # Small requests, so that a batch of a few hundred rows goes out in several of them.
    settings = milvus_settings(stack_settings, unique, max_request_bytes=100_000)
    yield settings
    drop_collections(settings)


@pytest.fixture
def store(store_settings: Settings) -> Iterator[MilvusVectorStore]:
    vector_store = MilvusVectorStore(store_settings)
    yield vector_store
    vector_store.close()


def test_upsert_twice_keeps_one_row_per_message_id(store: MilvusVectorStore, unique: str) -> None:
    rows = message_rows(300, users=5, tag=unique)
    assert store.upsert_messages(rows) == 300
    assert eventually(lambda: store.count_messages() == 300)
    # A replay, one row changed: still one row per id, and the last write wins.
    changed = dataclasses.replace(rows[0], top_intent="refund")
    assert store.upsert_messages([*rows[1:], changed]) == 300
    time.sleep(0.2)
    assert store.count_messages() == 300
    user0 = store.user_vectors(f"{unique}-u0", limit=100)
    assert len(user0) == 60
    assert {v.message_id: v.top_intent for v in user0}[f"{unique}-m0"] == "refund"


def test_user_vectors_are_the_newest_first(store: MilvusVectorStore, unique: str) -> None:
    rows = message_rows(40, users=2, tag=unique)
    store.upsert_messages(rows)
    assert eventually(lambda: store.count_messages() == 40)
    newest = store.user_vectors(f"{unique}-u1", limit=3)
    assert [v.message_id for v in newest] == [f"{unique}-m39", f"{unique}-m37", f"{unique}-m35"]
    assert newest[0].ts_ms == rows[39].ts_ms
    assert np.allclose(newest[0].embedding, rows[39].embedding, atol=1e-6)
    assert store.user_vectors(f"{unique}-nobody", limit=3) == []


def test_dimension_mismatch_names_the_collection_the_dimensions_and_the_fix(
    store_settings: Settings, store: MilvusVectorStore, unique: str
) -> None:
    store.upsert_messages(message_rows(3, users=1, tag=unique, dim=8))
    other = MilvusVectorStore(store_settings)
    assert eventually(lambda: other.count_messages() == 3)
    with pytest.raises(DimensionMismatchError) as caught:
        other.upsert_messages(message_rows(3, users=1, tag=unique, dim=16))
    text = str(caught.value)
    assert f"t_{unique}_messages" in text
    assert "8-dimensional" in text and "16-dimensional" in text
    assert "MPP_MILVUS__MESSAGES_COLLECTION" in text and "drop" in text
    # Not something the loop should retry.
    assert not isinstance(caught.value, RetryableError)


def test_delete_user_removes_only_that_user_and_is_idempotent(
    store: MilvusVectorStore, unique: str
) -> None:
    # Written in several requests and erased at once: nothing recent may survive.
    store.upsert_messages(message_rows(30, users=3, tag=unique))
    assert store.delete_user(f"{unique}-u1") == 10
    assert store.delete_user(f"{unique}-u1") == 0
    assert store.count_messages() == 20
    assert store.user_vectors(f"{unique}-u1") == []
    assert len(store.user_vectors(f"{unique}-u2", limit=50)) == 10
    # An id that needs escaping in a filter expression is matched literally.
    assert store.delete_user('x" or user_id != "') == 0
    assert store.count_messages() == 20


def test_search_campaigns_finds_the_nearest_live_campaigns(
    store: MilvusVectorStore, unique: str
) -> None:
    vectors = unit_vectors(5, seed=11)
    now = 1_780_000_000_000
    store.upsert_campaigns(
        [
            CampaignVector(f"{unique}-live", vectors[0].tolist()),
            CampaignVector(f"{unique}-paused", vectors[1].tolist(), active=False),
            CampaignVector(f"{unique}-ended", vectors[2].tolist(), ends_at_ms=now - 1),
            CampaignVector(f"{unique}-future", vectors[3].tolist(), starts_at_ms=now + 1),
            CampaignVector(f"{unique}-other", vectors[4].tolist(), ends_at_ms=now + 1000),
        ]
    )
    hits = store.search_campaigns(vectors[0].tolist(), k=5, now_ms=now)
    assert hits[0].campaign_id == f"{unique}-live"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert {h.campaign_id for h in hits} == {f"{unique}-live", f"{unique}-other"}
    everything = store.search_campaigns(vectors[1].tolist(), k=5, live_only=False)
    assert everything[0].campaign_id == f"{unique}-paused" and len(everything) == 5
    # Upserting a campaign again replaces it (here: paused -> active).
    store.upsert_campaigns([CampaignVector(f"{unique}-paused", vectors[1].tolist())])
    assert eventually(
        lambda: (
            store.search_campaigns(vectors[1].tolist(), k=1, now_ms=now)[0].campaign_id
            == f"{unique}-paused"
        )
    )


def test_a_server_that_is_down_raises_retryable(stack_settings: Settings, unique: str) -> None:
    settings = milvus_settings(stack_settings, unique, uri=f"http://127.0.0.1:{free_port()}")
    store = MilvusVectorStore(settings)
    started = time.monotonic()
    with pytest.raises(RetryableError, match="milvus"):
        store.upsert_messages(message_rows(2, users=1, tag=unique))
    with pytest.raises(RetryableError):
        store.delete_user("anyone")
    assert time.monotonic() - started < settings.milvus.timeout_s
    reason = store.ping()
    assert reason is not None and reason.startswith("milvus:")


def test_the_store_recovers_when_the_server_comes_back(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = milvus_settings(stack_settings, unique, uri=f"http://127.0.0.1:{port}")
    store = MilvusVectorStore(settings)
    rows = message_rows(20, users=2, tag=unique)
    with private_milvus(tmp_path, port):
        store.upsert_messages(rows[:10])
        assert store.ping() is None
    with pytest.raises(RetryableError):
        store.upsert_messages(rows[10:])
    with private_milvus(tmp_path, port):
        # What the batch loop does: retry the batch until the store takes it.
        deadline = time.monotonic() + 20
        while True:
            try:
                store.upsert_messages(rows[10:])
                break
            except RetryableError:
                assert time.monotonic() < deadline, "the store did not recover"
                time.sleep(0.2)
        assert eventually(lambda: store.count_messages() == 20)
