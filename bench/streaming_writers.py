"""bench/streaming.py's vector-writer and graph-writer stages, each service's loop beside its
bare library call on the very rows the service writes."""

from __future__ import annotations

from functools import partial
from typing import Any

from streaming_kit import (
    chunked,
    isolated,
    median,
    produce_all,
    rekeyed,
    run_stage,
    timed,
)

from mpp.config import Settings
from mpp.embedding import Embedder
from mpp.kafka import ensure_topics
from mpp.kafka.testing import drop_topics
from mpp.pipeline import log
from mpp.stores import neo4j_driver
from mpp.stores.graph_rows import ROW, MergeBatch, merge_row
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.stores.vector_rows import MessageVector
from mpp.v1 import events_pb2 as E

# The graph the service writes (the same nodes, relationships and properties), as one plain
# UNWIND MERGE per batch: without the service's removal of links a re-enrichment dropped, and
# without the users' first and last message times, which the service derives.
BARE_MERGE = """
UNWIND $rows AS row
MERGE (u:User {id: row.user_id})
MERGE (m:Message {id: row.message_id})
SET m.ts = row.ts, m.text = row.text, m.channel = row.channel, m.locale = row.locale,
    m.model = row.model, m.campaign_id = row.campaign_id
MERGE (u)-[:SENT]->(m)
FOREACH (i IN row.intents |
    MERGE (n:Intent {name: i.name})
    MERGE (m)-[r:HAS_INTENT]->(n) SET r.score = i.score)
FOREACH (c IN row.campaigns |
    MERGE (k:Campaign {id: c.id})
    MERGE (m)-[r:ABOUT]->(k) SET r.score = c.score, r.source = c.source)
"""


def bare_rows(enriched: list[E.EnrichedMessage]) -> list[dict[str, Any]]:
    """The service's rows (``mpp.stores.graph_rows.merge_row``) as the plain call takes them:
    a map per message, a map per link."""
    rows = []
    for e in enriched:
        values = merge_row(e)
        campaigns, intents = values[-2:]
        row: dict[str, Any] = dict(zip(ROW, values, strict=True))
        row["campaigns"] = [{"id": c, "score": s, "source": src} for c, s, src in campaigns]
        row["intents"] = [{"name": name, "score": score} for name, score in intents]
        rows.append(row)
    return rows


def bare_merge(settings: Settings, rows: list[dict[str, Any]], batch: int) -> None:
    with neo4j_driver(settings) as driver:
        for i in range(0, len(rows), batch):
            driver.execute_query(BARE_MERGE, rows=rows[i : i + batch])


def merge_all(graph: Neo4jGraphStore, batches: list[MergeBatch]) -> None:
    for batch in batches:
        graph.merge_batch(batch)


def stages(
    base: Settings,
    n: int,
    reps: int,
    run: str,
    runs: list[str],
    graph_prefixes: list[str],
    embedder: Embedder,
    enriched: list[E.EnrichedMessage],
    client: Any,
    results: list[tuple[str, float, float]],
    extra: list[str],
) -> None:
    """The vector-writer's and the graph-writer's loops beside their bare calls."""

    # -- vector-writer ------------------------------------------------------------------------
    from mpp_vector_writer.service import worker as vector_worker

    batch = base.vector_writer.batch_size
    bare_rates, stage_rates = [], []
    for rep in range(reps):
        settings = isolated(base, runs[rep])
        bare_name = f"bare_{runs[rep]}"
        bare_store = MilvusVectorStore(
            settings.model_copy(
                update={
                    "milvus": settings.milvus.model_copy(
                        update={
                            "messages_collection": bare_name,
                            "campaigns_collection": f"barec_{runs[rep]}",
                        }
                    )
                }
            )
        )
        bare_store.ensure_collections(embedder.dimension)
        # The very rows the service writes, prepared outside the timing.
        rows = [MessageVector.from_enriched(e).row() for e in enriched]
        if rep == 0:
            # Warm-up, untimed: the first upserts into a just started Milvus are slower.
            for i in range(0, len(rows), batch):
                client.upsert(bare_name, rows[i : i + batch])
            client.delete(bare_name, ids=[r["message_id"] for r in rows])

        def bare_upserts(rows: list[dict[str, Any]] = rows, name: str = bare_name) -> None:
            for i in range(0, len(rows), batch):
                client.upsert(name, rows[i : i + batch])

        bare_rates.append(timed(f"[{rep + 1}/{reps}] bare MilvusClient.upsert", bare_upserts, n))
        # Each repetition's embedder run left its enriched topic full: the service reads it.
        stage = run_stage(settings, vector_worker(settings), n)
        log(f"[{rep + 1}/{reps}] vector-writer service loop: {stage:,.0f}/s")
        stage_rates.append(stage)
        client.drop_collection(bare_name)
        client.drop_collection(f"barec_{runs[rep]}")
    results.append(("vector-writer vs bare upsert", median(stage_rates), median(bare_rates)))

    # -- graph-writer -------------------------------------------------------------------------
    from mpp_graph_writer.service import worker as graph_worker

    graph = Neo4jGraphStore(base)
    graph.ensure_schema()
    # Warm-up, untimed, of both statements: a Neo4j just started, or a statement it has not
    # run before, runs its first writes at half speed or less (query planning, JIT), which
    # would favour whichever side of the comparison came later.
    warm_tag = f"warm{run}"
    graph_prefixes += [warm_tag, f"s{warm_tag}"]
    bare_merge(base, bare_rows(rekeyed(enriched, warm_tag)), base.graph_writer.batch_size)
    for chunk in chunked(rekeyed(enriched, f"s{warm_tag}"), base.graph_writer.batch_size):
        graph.merge_batch(MergeBatch.of_enriched(chunk))
    bare_rates, stage_rates, statement_rates = [], [], []
    for rep in range(reps):
        settings = isolated(base, runs[rep])
        # The same rows under ids of their own, on the same labels (so the same uniqueness
        # constraints), and for the service a first write too: each repetition's topic holds
        # the embedder's output of that repetition, under its own user ids.
        tag = f"bare{runs[rep]}"
        graph_prefixes.append(tag)
        # The very rows the service sends, prepared outside the timing.
        graph_rows = bare_rows(rekeyed(enriched, tag))
        bare_rates.append(
            timed(
                f"[{rep + 1}/{reps}] bare UNWIND MERGE",
                partial(bare_merge, base, graph_rows, base.graph_writer.batch_size),
                n,
            )
        )
        own = [
            MergeBatch.of_enriched(chunk)
            for chunk in chunked(rekeyed(enriched, f"own{runs[rep]}"), base.graph_writer.batch_size)
        ]
        graph_prefixes.append(f"own{runs[rep]}")
        statement_rates.append(
            timed(
                f"[{rep + 1}/{reps}] the service's statement alone (Neo4jGraphStore.merge_batch)",
                partial(merge_all, graph, own),
                n,
            )
        )
        topic = f"{settings.kafka.topics.enriched}.g"
        kafka = settings.kafka.model_copy(
            update={
                "group_prefix": f"bench-g{runs[rep]}",
                "topics": settings.kafka.topics.model_copy(update={"enriched": topic}),
            }
        )
        graph_settings = settings.model_copy(update={"kafka": kafka})
        fresh = rekeyed(enriched, f"g{runs[rep]}")
        graph_prefixes.append(f"g{runs[rep]}")
        ensure_topics(graph_settings.kafka)
        produce_all(
            graph_settings,
            topic,
            [e.SerializeToString() for e in fresh],
            [e.message.user_id for e in fresh],
        )
        stage = run_stage(graph_settings, graph_worker(graph_settings), n)
        drop_topics(kafka, [topic])
        log(f"[{rep + 1}/{reps}] graph-writer service loop: {stage:,.0f}/s")
        stage_rates.append(stage)
    graph.close()
    results.append(("graph-writer vs bare UNWIND MERGE", median(stage_rates), median(bare_rates)))
    extra.append(
        f"the graph-writer's statement alone (columns): {median(statement_rates):,.0f}/s "
        f"(the service's loop runs at {median(stage_rates) / median(statement_rates):.2f} of it)"
    )
