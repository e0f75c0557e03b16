"""A message_id owned by one user cannot be moved to another by a later event: Milvus, Neo4j
and the analytics facts on the real servers keep the first owner's message, and name the
conflicting message for the dead-letter queue (one query per batch)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest

from mpp import analytics
from mpp.config import Settings
from mpp.stores.graph_rows import MessageNode
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.stores.vector_rows import MessageVector
from mpp.v1 import events_pb2 as E

from .helpers import drop_collections, eventually, milvus_settings

pytestmark = pytest.mark.integration
DIM = 8


def enriched(message_id: str, user_id: str, text: str, ts_ms: int) -> E.EnrichedMessage:
    out = E.EnrichedMessage(model="test", dimension=DIM)
    out.message.message_id = message_id
    out.message.user_id = user_id
    out.message.text = text
    out.message.channel = "chat"
    out.message.timestamp.FromMilliseconds(ts_ms)
    vector = np.zeros(DIM, dtype=np.float32)
    vector[len(user_id) % DIM] = 1.0
    out.embedding.extend(vector.tolist())
    return out


@pytest.fixture
def messages(unique: str) -> tuple[E.EnrichedMessage, E.EnrichedMessage]:
    mine = enriched(f"{unique}-shared", f"{unique}-alice", "alice's own words", 1_780_000_000_000)
    theirs = enriched(f"{unique}-shared", f"{unique}-mallory", "mallory's", 1_780_000_100_000)
    return mine, theirs


@pytest.fixture
def vectors(stack_settings: Settings, unique: str) -> Iterator[MilvusVectorStore]:
    settings = milvus_settings(stack_settings, unique)
    store = MilvusVectorStore(settings)
    yield store
    store.close()
    drop_collections(settings)


def test_milvus_keeps_the_first_owner_and_names_the_conflict(
    vectors: MilvusVectorStore, messages: tuple[E.EnrichedMessage, E.EnrichedMessage]
) -> None:
    mine, theirs = messages
    assert vectors.screen_message_ids([mine]) == []
    vectors.upsert_messages([MessageVector.from_enriched(mine)])
    # A fresh writer (nothing in memory) asks the store: one query for the batch.
    fresh = MilvusVectorStore(vectors._settings)
    assert eventually(lambda: bool(fresh.message_owners([mine.message.message_id])))
    refused = fresh.screen_message_ids([theirs])
    assert [(e.message.user_id, r.code) for e, r in refused] == [
        (theirs.message.user_id, E.ERROR_CODE_MESSAGE_ID_CONFLICT)
    ]
    assert fresh.message_owners([mine.message.message_id]) == {
        mine.message.message_id: mine.message.user_id
    }
    # The owner's replay is no conflict.
    assert fresh.screen_message_ids([mine]) == []
    fresh.close()


def test_neo4j_never_moves_a_message_even_when_written_unscreened(
    stack_settings: Settings,
    unique: str,
    messages: tuple[E.EnrichedMessage, E.EnrichedMessage],
) -> None:
    mine, theirs = messages
    store = Neo4jGraphStore(stack_settings)
    try:
        store.merge_messages([MessageNode.from_enriched(mine)])
        # Written without the screen (a batch prepared before the first was written): the
        # statement itself leaves the message with its owner and its text.
        store.merge_messages([MessageNode.from_enriched(theirs)])
        records, _, _ = store._driver.execute_query(
            "MATCH (u:User)-[:SENT]->(m:Message {id: $id}) RETURN u.id AS user, m.text AS text",
            id=mine.message.message_id,
        )
        assert [(r["user"], r["text"]) for r in records] == [
            (mine.message.user_id, mine.message.text)
        ]
        refused = Neo4jGraphStore(stack_settings, driver=store._driver).screen_message_ids([theirs])
        assert [r.code for _, r in refused] == [E.ERROR_CODE_MESSAGE_ID_CONFLICT]
        # Erasing the owner takes the message; the id is then free.
        store.delete_user(mine.message.user_id)
        assert store.screen_message_ids([theirs]) == []
    finally:
        store._driver.execute_query(
            "MATCH (n) WHERE n.id STARTS WITH $tag DETACH DELETE n", tag=f"{unique}-"
        )
        store.close()


def test_analytics_facts_keep_the_first_owner_and_return_the_conflict(
    database_settings: Settings, messages: tuple[E.EnrichedMessage, E.EnrichedMessage]
) -> None:
    mine, theirs = messages
    with psycopg.connect(database_settings.postgres.conninfo()) as conn:
        first = analytics.write_batch(conn, [analytics.MessageFact.from_enriched(mine)], [])
        assert first.messages_inserted == 1 and first.message_id_conflicts == ()
        second = analytics.write_batch(conn, [analytics.MessageFact.from_enriched(theirs)], [])
        assert second.messages_inserted == 0
        assert second.message_id_conflicts == (mine.message.message_id,)
        rows = conn.execute(
            "SELECT user_id, occurred_at FROM message_facts WHERE message_id = %s",
            (mine.message.message_id,),
        ).fetchall()
        assert rows == [(mine.message.user_id, datetime.fromtimestamp(1_780_000_000, UTC))]
        # Nothing was counted for the other user.
        engaged = conn.execute(
            "SELECT count(*) FROM user_engagement WHERE user_id = %s", (theirs.message.user_id,)
        ).fetchall()
        assert engaged == [(0,)]
