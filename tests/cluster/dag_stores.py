"""What the stores hold after a run of the DAG or of the stream (tests/cluster/test_dag_run.py):
the messages in Milvus, the graph in Neo4j and the warehouse's tables, and how the batch and
streaming paths' records are compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mpp.config import Settings
from mpp.stores import milvus_client, neo4j_driver
from mpp.warehouse import TABLES
from mpp.warehouse.sqlite import SqliteWarehouse
from tests.cluster.dag_batch import Batch


def milvus_rows(settings: Settings) -> dict[str, tuple[str, np.ndarray]]:
    client = milvus_client(settings)
    rows = client.query(
        settings.milvus.messages_collection,
        filter='message_id != ""',
        output_fields=["message_id", "user_id", "embedding"],
        limit=16_000,
    )
    return {
        r["message_id"]: (r["user_id"], np.asarray(r["embedding"], dtype=np.float32)) for r in rows
    }


def graph(settings: Settings, prefix: str) -> dict[str, tuple[Any, ...]]:
    """Each message of the run's users: its sender, properties and links, as one tuple."""
    with neo4j_driver(settings) as driver:
        records, _, _ = driver.execute_query(
            """
            MATCH (u:User)-[:SENT]->(m:Message) WHERE u.id STARTS WITH $prefix
            OPTIONAL MATCH (m)-[a:ABOUT]->(c:Campaign)
            WITH u, m, collect([c.id, a.source, a.score]) AS campaigns
            OPTIONAL MATCH (m)-[h:HAS_INTENT]->(i:Intent)
            RETURN u.id AS user, m.id AS id, m.ts AS ts, m.text AS text,
                   m.channel AS channel, m.model AS model, m.campaign_id AS campaign,
                   campaigns, collect([i.name, h.score]) AS intents
            """,
            prefix=prefix + "-",
        )
    return {
        r["id"]: (
            r["user"], r["ts"], r["text"], r["channel"], r["model"], r["campaign"],
            sorted(map(tuple, (c for c in r["campaigns"] if c[0] is not None))),
            sorted(map(tuple, (i for i in r["intents"] if i[0] is not None))),
        )
        for r in records
    }  # fmt: skip


# A message's links and intents are kept where their cosine score reaches a threshold; the two
# paths encode in batches of other sizes, so scores agree to about 1e-6, and a score this close
# to a threshold may fall on either side of it.
NEAR_THRESHOLD = 1e-3


def _links(links: list[Any], threshold: float) -> tuple[dict[tuple[str, ...], float], float]:
    return {tuple(map(str, link[:-1])): float(link[-1]) for link in links}, threshold


def differing_links(
    got: dict[str, tuple[Any, ...]], want: dict[str, tuple[Any, ...]]
) -> dict[str, set[tuple[str, ...]]]:
    """Asserts the two graphs hold the same messages, senders and properties, and the same
    links and intents with scores within 1e-4, except links and intents scored within
    NEAR_THRESHOLD of their threshold, which one side may lack; returns those, by message."""
    cfg = Settings().embedder
    assert sorted(got) == sorted(want)
    differing: dict[str, set[tuple[str, ...]]] = {}
    for message_id, (*props, campaigns, intents) in got.items():
        *want_props, want_campaigns, want_intents = want[message_id]
        assert props == want_props, message_id
        for (mine, threshold), (theirs, _) in (
            (_links(campaigns, cfg.campaign_link_threshold), _links(want_campaigns, 0)),
            (_links(intents, cfg.intent_threshold), _links(want_intents, 0)),
        ):
            for key in mine.keys() & theirs.keys():
                assert abs(mine[key] - theirs[key]) <= 1e-4, (message_id, key)
            for key in mine.keys() ^ theirs.keys():
                score = mine.get(key, theirs.get(key, 0.0))
                assert abs(score - threshold) <= NEAR_THRESHOLD, (message_id, key, score)
                differing.setdefault(message_id, set()).add(key)
    return differing


def assert_same_warehouse(
    got: dict[str, list[tuple[Any, ...]]],
    want: dict[str, list[tuple[Any, ...]]],
    differing: dict[str, set[tuple[str, ...]]],
) -> None:
    """Every warehouse table equal, but for what the links and intents found by
    differing_links decide: those messages' intents and campaigns, their users' top intents
    and campaigns, and the campaigns they name."""
    if not differing:
        assert got == want
        return
    names = {n: spec.column_names for n, spec in TABLES.items()}
    campaigns = {key[0] for keys in differing.values() for key in keys}
    facts = {r[0]: r for r in want["message_facts"]}
    users = {facts[m][names["message_facts"].index("user_id")] for m in differing}

    def kept(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        columns = names[table]
        out = []
        for row in rows:
            values = dict(zip(columns, row, strict=True))
            if table == "message_facts" and values["message_id"] in differing:
                values["intents"] = values["campaign_ids"] = "?"
            if table == "user_engagement" and values["user_id"] in users:
                values["top_intents"] = values["campaigns_engaged"] = "?"
            if table.startswith("campaign_") and values["campaign_id"] in campaigns:
                continue
            out.append(tuple(values.values()))
        return out

    for table in TABLES:
        assert kept(table, got[table]) == kept(table, want[table]), table


def clear_graph(prefix: str) -> None:
    with neo4j_driver(Settings()) as driver:
        driver.execute_query(
            """
            MATCH (u:User) WHERE u.id STARTS WITH $prefix
            OPTIONAL MATCH (u)-[:SENT]->(m:Message)
            DETACH DELETE u, m
            """,
            prefix=prefix + "-",
        )


def warehouse(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every warehouse table's rows, sorted (the sync's own bookkeeping is not a table)."""
    store = SqliteWarehouse(path)
    try:
        return {
            name: sorted(tuple(str(row[c]) for c in spec.column_names) for row in store.read(name))
            for name, spec in TABLES.items()
        }
    finally:
        store.close()


def snapshot(batch: Batch) -> dict[str, Any]:
    batch.writers.wait_drained(timeout_s=300)
    return {
        "milvus": {k: v[0] for k, v in milvus_rows(batch.writers.settings).items()},
        "graph": graph(batch.writers.settings, batch.writers.run_id),
        "warehouse": warehouse(batch.data_dir / "warehouse.sqlite"),
        "enriched_files": sorted(
            str(p.relative_to(batch.data_dir))
            for p in (batch.data_dir / "enriched-messages").rglob("*.parquet")
        ),
    }
