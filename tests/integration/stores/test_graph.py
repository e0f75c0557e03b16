"""Neo4jGraphStore on the real Neo4j server: constraints, idempotent MERGE, erasure, outages."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from neo4j.exceptions import ConstraintError

from mpp.config import Settings
from mpp.kafka import RetryableError
from mpp.stores.graph_rows import (
    CampaignEdge,
    GraphCounts,
    MessageNode,
    PeerCampaigns,
    UserGraph,
    UserMessage,
)
from mpp.stores.neo4j import Neo4jGraphStore

from .helpers import graph_rows


def relationships(store: Neo4jGraphStore, tag: str) -> int:
    """Every relationship that touches one of the test's nodes."""
    records, _, _ = store._driver.execute_query(
        "MATCH (n)-[r]-() WHERE n.id STARTS WITH $tag OR n.name STARTS WITH $tag "
        "RETURN count(DISTINCT r) AS c",
        tag=f"{tag}-",
    )
    return int(records[0]["c"])


def nodes(store: Neo4jGraphStore, tag: str) -> int:
    records, _, _ = store._driver.execute_query(
        "MATCH (n) WHERE n.id STARTS WITH $tag OR n.name STARTS WITH $tag RETURN count(n) AS c",
        tag=f"{tag}-",
    )
    return int(records[0]["c"])


@pytest.fixture
def store(stack_settings: Settings, unique: str) -> Iterator[Neo4jGraphStore]:
    graph = Neo4jGraphStore(stack_settings)
    graph.ensure_schema()
    yield graph
    graph._driver.execute_query(
        "MATCH (n) WHERE n.id STARTS WITH $tag OR n.name STARTS WITH $tag DETACH DELETE n",
        tag=f"{unique}-",
    )
    graph.close()


def test_schema_has_the_uniqueness_constraints(store: Neo4jGraphStore, unique: str) -> None:
    store.ensure_schema()  # again: idempotent
    rules = set(store.constraints().values())
    assert {("User", "id"), ("Message", "id"), ("Campaign", "id"), ("Intent", "name")} <= rules
    store.merge_messages(graph_rows(unique, 1, 1))
    with pytest.raises(ConstraintError):
        store._driver.execute_query("CREATE (:User {id: $id})", id=f"{unique}-u0")


def test_merging_the_same_batch_twice_changes_no_counts(
    store: Neo4jGraphStore, unique: str
) -> None:
    rows = graph_rows(unique, 200, users=7)
    users = [f"{unique}-u{i}" for i in range(7)]
    store.merge_messages(rows)
    first = store.counts(users)
    first_nodes, first_rels = nodes(store, unique), relationships(store, unique)
    store.merge_messages(rows)
    assert store.counts(users) == first
    assert (nodes(store, unique), relationships(store, unique)) == (first_nodes, first_rels)
    # 150 messages have two campaign links each, all 200 one intent.
    assert first == GraphCounts(users=7, messages=200, about=300, has_intent=200)
    # users + messages + 3 campaigns + 2 intents; SENT + ABOUT + HAS_INTENT.
    assert first_nodes == 7 + 200 + 3 + 2
    assert first_rels == 200 + 300 + 200


def test_unknown_intent_is_not_a_node(store: Neo4jGraphStore, unique: str) -> None:
    from mpp.v1 import events_pb2 as E

    enriched = E.EnrichedMessage(
        message=E.ValidatedMessage(message_id=f"{unique}-m", user_id=f"{unique}-u", text="hm"),
        intents=[E.IntentScore(intent="unknown", score=0.2)],
    )
    store.merge_messages([MessageNode.from_enriched(enriched)])
    assert store.counts([f"{unique}-u"]) == GraphCounts(1, 1, 0, 0)
    records, _, _ = store._driver.execute_query(
        "MATCH (:Message {id: $id})-[:HAS_INTENT]->(i) RETURN count(i) AS c", id=f"{unique}-m"
    )
    assert records[0]["c"] == 0


def test_the_last_write_of_a_message_decides_its_links(store: Neo4jGraphStore, unique: str) -> None:
    base = MessageNode(
        message_id=f"{unique}-m",
        user_id=f"{unique}-u",
        ts_ms=1,
        campaigns=(
            CampaignEdge(f"{unique}-c1", 0.9, "event"),
            CampaignEdge(f"{unique}-c2", 0.4, "similarity"),
        ),
        intents=((f"{unique}-i1", 0.7),),
    )
    relinked = MessageNode(
        message_id=base.message_id,
        user_id=base.user_id,
        ts_ms=2,
        campaigns=(CampaignEdge(f"{unique}-c3", 0.6, "similarity"),),
        intents=((f"{unique}-i2", 0.8),),
    )
    store.merge_messages([base])
    assert store.counts([base.user_id]) == GraphCounts(1, 1, 2, 1)
    # Re-enriched later, and both versions in one batch: the last one wins either way.
    store.merge_messages([base, relinked])
    records, _, _ = store._driver.execute_query(
        "MATCH (m:Message {id: $id}) "
        "RETURN m.ts AS ts, [(m)-[r:ABOUT]->(c) | [c.id, r.score, r.source]] AS about, "
        "[(m)-[:HAS_INTENT]->(i) | i.name] AS intents",
        id=base.message_id,
    )
    (record,) = records
    assert record["ts"] == 2
    assert record["about"] == [[f"{unique}-c3", pytest.approx(0.6), "similarity"]]
    assert record["intents"] == [f"{unique}-i2"]
    # The campaigns it no longer links to stay: they are shared.
    assert store.count_nodes("Campaign", [f"{unique}-c1", f"{unique}-c2", f"{unique}-c3"]) == 3


def test_users_keep_their_first_and_last_message_time_whatever_the_order(
    store: Neo4jGraphStore, unique: str
) -> None:
    rows = graph_rows(unique, 12, users=2)
    # Later messages first, then earlier ones, then the middle again: each user ends with the
    # earliest and latest time of all its messages.
    store.merge_messages(rows[8:])
    store.merge_messages(rows[:4])
    store.merge_messages(rows[4:8])
    store.merge_messages(rows[5:7])
    records, _, _ = store._driver.execute_query(
        "MATCH (u:User) WHERE u.id STARTS WITH $tag "
        "RETURN u.id AS id, u.first_seen AS first, u.last_seen AS last",
        tag=f"{unique}-",
    )
    seen = {r["id"]: (r["first"], r["last"]) for r in records}
    expected = {}
    for row in rows:
        first, last = expected.get(row.user_id, (row.ts_ms, row.ts_ms))
        expected[row.user_id] = (min(first, row.ts_ms), max(last, row.ts_ms))
    assert seen == expected and len(seen) == 2


def test_delete_user_removes_the_user_and_messages_but_not_shared_nodes(
    store: Neo4jGraphStore, unique: str
) -> None:
    store.merge_messages(graph_rows(unique, 30, users=3))
    campaigns = [f"{unique}-c{i}" for i in range(3)]
    intents = [f"{unique}-i{i}" for i in range(2)]
    assert store.delete_user(f"{unique}-u1") == 10
    assert store.delete_user(f"{unique}-u1") == 0
    assert store.counts([f"{unique}-u1"]) == GraphCounts(0, 0, 0, 0)
    assert store.count_nodes("Message", [f"{unique}-m{i}" for i in range(1, 30, 3)]) == 0
    assert store.counts([f"{unique}-u0", f"{unique}-u2"]).messages == 20
    assert store.count_nodes("Campaign", campaigns) == 3
    assert store.count_nodes("Intent", intents) == 2


def test_the_recommenders_read_gives_recent_messages_and_peers_campaigns(
    store: Neo4jGraphStore, unique: str
) -> None:
    def message(
        user: str, n: int, intents: dict[str, float], about: dict[str, float]
    ) -> MessageNode:
        return MessageNode(
            message_id=f"{unique}-{user}-m{n}",
            user_id=f"{unique}-{user}",
            ts_ms=n,
            campaigns=tuple(
                CampaignEdge(f"{unique}-{c}", s, "similarity") for c, s in about.items()
            ),
            intents=tuple((f"{unique}-{i}", s) for i, s in intents.items()),
        )

    store.merge_messages(
        [
            # The user: only the two newest messages count (recent=2).
            message("a", 1, {"travel": 0.9}, {"own": 0.8}),
            message("a", 2, {"food": 0.7}, {"own": 0.6}),
            message("a", 3, {}, {}),
            # Peers through food (b, c); d shares travel only, from a message too old to count.
            message("b", 4, {"food": 0.5}, {"x": 0.4}),
            message("c", 5, {"food": 0.5}, {"x": 0.3, "y": 0.3}),
            message("d", 6, {"travel": 0.5}, {"z": 0.9}),
        ]
    )
    read = store.user_graph(f"{unique}-a", recent=2, per_node=50, peers=100, limit=10)
    assert sorted(read.messages, key=lambda m: m.ts_ms) == [
        UserMessage(f"{unique}-a-m2", 2, ((f"{unique}-food", 0.7),), ((f"{unique}-own", 0.6),)),
        UserMessage(f"{unique}-a-m3", 3),
    ]
    # Campaigns of the peers only: "own" is the user's, and d's "z" comes through a message
    # of the user's that is not among its recent ones.
    assert read.peers == (
        PeerCampaigns(f"{unique}-x", 2, f"{unique}-food"),
        PeerCampaigns(f"{unique}-y", 1, f"{unique}-food"),
    )
    # limit; an unknown user: nothing, in the same one read.
    assert [p.campaign_id for p in store.user_graph(f"{unique}-a", 2, 50, 100, 1).peers] == [
        f"{unique}-x"
    ]
    assert store.user_graph(f"{unique}-nobody", 2, 50, 100, 10) == UserGraph()


def test_a_server_that_is_down_raises_retryable(stack_settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    neo4j = stack_settings.neo4j.model_copy(
        update={"uri": f"bolt://127.0.0.1:{port}", "max_transaction_retry_time_s": 1.0}
    )
    store = Neo4jGraphStore(stack_settings.model_copy(update={"neo4j": neo4j}))
    started = time.monotonic()
    with pytest.raises(RetryableError, match="neo4j"):
        store.merge_messages(graph_rows("down", 2, 1))
    with pytest.raises(RetryableError):
        store.delete_user("anyone")
    # The driver's own retries are bounded by max_transaction_retry_time_s.
    assert time.monotonic() - started < 15
    reason = store.ping()
    assert reason is not None and reason.startswith("neo4j:")
    store.close()
