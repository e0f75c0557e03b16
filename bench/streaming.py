"""Throughput of the streaming path, each stage beside its bare library call, in one run.

    .venv/bin/python bench/streaming.py [--events 3000] [--reps 3] [--tracing] [--only-end-to-end]

Needs the local stack (``make up``). Every run uses topics, consumer groups, collections and
user ids of its own, and removes its collections and graph nodes afterwards.

Printed, on the same N chitchat messages, each stage and its bare call run ``--reps`` times
(the median is reported; every repetition writes ids of its own, so each is a first write;
Milvus and Neo4j get one untimed warm-up pass first, Neo4j with both the bare and the service's
statement):
- embedder: the service's loop (consume ValidatedMessage, encode, tag, link, produce,
  commit) vs a bare ``SentenceTransformer.encode`` of the same texts, run in a process of its
  own with torch's defaults (all CPUs in one call), as a user would call it. The service
  splits each batch into one shard per CPU (``MPP_EMBEDDER__ENCODE_WORKERS``); the bare
  ``Embedder.encode`` of those shards is printed too, so that the gain of sharding and the
  cost of the service around it can be told apart;
- vector-writer: the service's loop vs bare ``MilvusClient.upsert`` calls of the same rows
  (same collection schema) in batches of the same size;
- graph-writer: the service's loop vs one bare ``UNWIND ... MERGE`` statement per batch on the
  very rows the service sends (User, Message with its properties, SENT, the intents and
  campaign links with theirs), as a user writes it: a map per message (the usual form of a
  batched write), without the service's removal of links a re-enrichment dropped and without
  the users' first and last message times. The service's own statement alone (its columns,
  built outside the timing) is printed too, so that the gain of its statement and the cost
  of the loop around it can be told apart;
- end to end: raw events produced to Kafka until both stores hold every message, with the four
  services as processes, vs the bare encode rate (the slowest bare step).
Targets (issue #3): each stage at least 0.8 of its bare call; end to end at least 0.7.

``--tracing`` runs the end-to-end step ``--reps`` times with tracing off and as many with it
on, alternating (off, on, off, on...), and prints both medians' ratios and the drop: the
services traced by the standard OTEL_* variables, every record sampled
(``parentbased_always_on``), spans sent over OTLP gRPC to the local Jaeger (``mpp stack up
--with observability``). The bench's producer is not traced: each record's trace starts at
ingest, which costs the services what a traced producer would. Target (issue #16): the ratio
with tracing on at most 5% below the one without. ``--only-end-to-end`` skips the three
stages (the bare encode is still measured: it is the end-to-end step's denominator).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from mpp.codecs import decode, decode_raw_event, encode
from mpp.config import Settings
from mpp.embedding import Embedder, packaged_model_path
from mpp.kafka import TrackedProducer, ensure_topics
from mpp.kafka.testing import isolated_kafka
from mpp.pipeline import STREAMING, Pipeline, log
from mpp.samples import chitchat_events
from mpp.service import Worker, build_loop, freeze_startup_objects
from mpp.stack import repo_root, stack_dir
from mpp.stack.jaeger import HOST as JAEGER_HOST
from mpp.stack.jaeger import OTLP_GRPC_PORT, JaegerServer
from mpp.stores import milvus_client, neo4j_driver
from mpp.stores.graph_rows import ROW, MergeBatch, merge_row
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.stores.vector_rows import MessageVector
from mpp.v1 import events_pb2 as E
from mpp.validation import Rules, validate_event


def isolated(settings: Settings, run: str) -> Settings:
    kafka = isolated_kafka(settings.kafka, run, create=False, group_prefix=f"bench-{run}")
    milvus = settings.milvus.model_copy(
        update={
            "messages_collection": f"messages_{run}",
            "campaigns_collection": f"campaigns_{run}",
        }
    )
    ensure_topics(kafka)
    return settings.model_copy(update={"kafka": kafka, "milvus": milvus})


def run_stage(settings: Settings, worker: Worker, records: int) -> float:
    """Records per second of a service's loop in steady state: from the commit of its first
    batch to the commit of the last record. The first batch is the warm-up (the group's join,
    a collection or constraint created on first use), as the bare calls get theirs."""
    loop = build_loop(settings, worker)
    commits: list[tuple[float, int]] = []
    committed = loop._committed

    def timed_commit(batch: list[Any], started: float) -> None:
        committed(batch, started)
        commits.append((time.perf_counter(), loop.stats.records))

    loop._committed = timed_commit  # type: ignore[method-assign]
    # As ``run_worker`` does before its loop (here the bench's own data is frozen with it).
    freeze_startup_objects()
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    while loop.stats.records < records:
        time.sleep(0.005)
    loop.stop()
    thread.join(60)
    if len(commits) < 2:
        raise SystemExit(
            f"{worker.name}: all {records} records came in one batch, which is the warm-up; "
            f"run with --events above its batch size ({worker.batch_size})"
        )
    (first, warm_up), (end, done) = commits[0], commits[-1]
    return (done - warm_up) / (end - first)


def read_values(settings: Settings, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"read-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    while len(values) < count:
        values += [
            m.value() or b"" for m in consumer.consume(1000, timeout=1.0) if m.error() is None
        ]
    consumer.close()
    return values


def timed(label: str, work: Callable[[], Any], items: int) -> float:
    started = time.perf_counter()
    work()
    rate = items / (time.perf_counter() - started)
    log(f"{label}: {rate:,.0f}/s")
    return rate


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


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def rekeyed(enriched: list[E.EnrichedMessage], tag: str) -> list[E.EnrichedMessage]:
    """The same rows under ids of their own, so that every repetition is a first write."""
    out = []
    for e in enriched:
        copy = E.EnrichedMessage()
        copy.CopyFrom(e)
        copy.message.message_id = f"{tag}-{e.message.message_id}"
        copy.message.user_id = f"{tag}-{e.message.user_id}"
        out.append(copy)
    return out


def produce_all(settings: Settings, topic: str, values: list[bytes], keys: list[str]) -> None:
    producer = TrackedProducer(settings.kafka, service="bench")
    for key, value in zip(keys, values, strict=True):
        producer.produce(topic, value, key=key)
    producer.flush()


# The services' environment for the end-to-end runs with tracing on.
TRACING_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{JAEGER_HOST}:{OTLP_GRPC_PORT}",
    "OTEL_EXPORTER_OTLP_INSECURE": "true",
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
}


def jaeger_answers() -> bool:
    import socket

    try:
        with socket.create_connection((JAEGER_HOST, OTLP_GRPC_PORT), timeout=2):
            return True
    except OSError:
        return False


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(group: int) -> float:
    """User and system CPU time of the live processes in process group ``group``."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command name (in parentheses, which may hold spaces): state, ppid,
            # pgrp, ..., utime and stime are the 12th and 13th fields.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def cpu_of(pipeline: Pipeline, base: Settings) -> dict[str, float]:
    """CPU seconds used so far by each service of the run (its process group) and by the
    local Jaeger, when it runs."""
    groups = {name: process.owned_pid() for name, process in pipeline.processes.items()}
    groups["jaeger"] = JaegerServer(base, stack_dir(base), repo_root()).owned_pid()
    return {name: cpu_seconds(pid) for name, pid in groups.items() if pid is not None}


def end_to_end(
    base: Settings, n: int, extra_env: dict[str, str]
) -> tuple[float, str, dict[str, float]]:
    """Raw events produced until both stores hold every message, the four services as
    processes (``extra_env`` added to theirs); messages per second, the run's id, and the
    CPU seconds each service (and the local Jaeger) spent per 1,000 events meanwhile."""
    e2e_run = uuid.uuid4().hex[:8]
    e2e_settings = isolated(base, e2e_run)
    # Its own folder for the services' logs and pid files: never the managed services' one.
    home = Path(tempfile.mkdtemp(prefix="mpp-bench-"))
    pipeline = Pipeline(settings=e2e_settings, run_id=f"e{e2e_run}", home=home, extra_env=extra_env)
    e2e_raw = [
        json.dumps({**e, "user_id": f"e{e2e_run}-{e['user_id'][:12]}"}).encode()
        for e in chitchat_events(n)
    ]
    try:
        pipeline.start(*STREAMING)
        cpu_before = cpu_of(pipeline, base)
        started = time.perf_counter()
        pipeline.produce(e2e_raw, [None] * n)
        rate = n / (pipeline.wait_drained() - started)
        cpu = {
            name: (used - cpu_before[name]) * 1000 / n
            for name, used in cpu_of(pipeline, base).items()
            if name in cpu_before
        }
        log(
            f"end to end (raw topic -> Milvus and Neo4j){' traced' if extra_env else ''}: "
            f"{rate:,.0f}/s; milvus rows {pipeline.milvus_count()}, "
            f"graph {pipeline.graph_counts()}; CPU s per 1,000 events: "
            + ", ".join(f"{name} {used:.2f}" for name, used in cpu.items())
        )
        return rate, f"e{e2e_run}", cpu
    finally:
        pipeline.stop()
        pipeline.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument(
        "--reps", type=int, default=3, help="runs of each stage and its bare call (median)"
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="end to end with tracing off and on (OTLP to the local Jaeger), both ratios",
    )
    parser.add_argument(
        "--sample-ratio",
        type=float,
        default=1.0,
        help="with --tracing: the share of events traced (parentbased_traceidratio); 1 keeps all",
    )
    parser.add_argument(
        "--only-end-to-end", action="store_true", help="skip the three stages' comparisons"
    )
    args = parser.parse_args()
    if not 0 < args.sample_ratio <= 1:
        parser.error("--sample-ratio: a share in (0, 1], e.g. 0.1 to trace one event in ten")
    traced_env = dict(TRACING_ENV)
    if args.sample_ratio < 1:
        traced_env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        traced_env["OTEL_TRACES_SAMPLER_ARG"] = str(args.sample_ratio)
    n, reps = args.events, args.reps
    if args.tracing and not jaeger_answers():
        raise SystemExit(
            f"--tracing needs the local Jaeger on {JAEGER_HOST}:{OTLP_GRPC_PORT}: "
            "run `.venv/bin/python -m mpp.cli stack up --with observability` first"
        )
    run = uuid.uuid4().hex[:8]
    base = Settings()
    results: list[tuple[str, float, float]] = []
    runs: list[str] = []
    graph_prefixes: list[str] = []

    # The same N messages for every stage, validated as ingest would.
    rules = Rules.from_settings(base.ingest)
    now = datetime.now(UTC)
    raw = [
        json.dumps({**e, "user_id": f"b{run}-{e['user_id'][:12]}"}).encode()
        for e in chitchat_events(n)
    ]
    validated = [validate_event(decode_raw_event(v), rules, now) for v in raw]
    texts = [v.text for v in validated]
    # As ``python -m mpp_embedder`` does, before torch loads OpenMP (the embedder stage runs in
    # this process); the bare call's child process gets the environment as it was.
    original_env = dict(os.environ)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    # The service's embedder, as the service builds it (one shard per CPU unless configured).
    embedder = Embedder.from_settings(base.embedder)
    service_threads = torch.get_num_threads()
    embedder.encode(texts[:64])  # warm-up: first call pays for lazy initialization

    # -- embedder -----------------------------------------------------------------------------
    # The bare call runs in a process of its own, as a user would make it: torch's defaults
    # (every CPU in one call, OpenMP's own wait policy), untouched by the service's settings.
    texts_file = Path(tempfile.mkdtemp(prefix="mpp-bench-")) / "texts.json"
    texts_file.write_text(json.dumps(texts))

    def bare_encode_rate() -> float:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--bare-encode",
                str(texts_file),
                "--encode-batch",
                str(base.embedder.encode_batch_size),
            ],
            env=original_env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return float(out.strip().splitlines()[-1])

    from mpp_embedder.service import build_worker as embedder_worker

    bare_rates, stage_rates, sharded_rates = [], [], []
    enriched: list[E.EnrichedMessage] = []
    for rep in range(reps):
        bare_rates.append(bare_encode_rate())
        log(f"[{rep + 1}/{reps}] bare SentenceTransformer.encode: {bare_rates[-1]:,.0f}/s")
        sharded_rates.append(
            timed(
                f"[{rep + 1}/{reps}] bare Embedder.encode (the service's shards)",
                lambda: embedder.encode(texts),
                n,
            )
        )
        if args.only_end_to_end:
            continue
        rep_run = f"{run}{rep}"
        settings = isolated(base, rep_run)
        runs.append(rep_run)
        produce_all(
            settings,
            settings.kafka.topics.validated,
            [encode(v) for v in validated],
            [v.user_id for v in validated],
        )
        stage = run_stage(
            settings, embedder_worker(settings, embedder=embedder, load_campaigns=lambda: []), n
        )
        log(f"[{rep + 1}/{reps}] embedder service loop: {stage:,.0f}/s")
        stage_rates.append(stage)
        if not enriched:
            enriched = [
                decode(E.EnrichedMessage, v)
                for v in read_values(settings, settings.kafka.topics.enriched, n)
            ]
    bare_encode = median(bare_rates)
    extra = [
        f"bare Embedder.encode, {len(embedder._shard_models)} shard(s) of {service_threads} "
        f"thread(s): {median(sharded_rates):,.0f}/s (the plain call: {bare_encode:,.0f}/s)"
    ]
    client = milvus_client(base)
    if not args.only_end_to_end:
        results.append(("embedder vs bare encode", median(stage_rates), bare_encode))
        stages(base, n, reps, run, runs, graph_prefixes, embedder, enriched, client, results, extra)

    # -- end to end ---------------------------------------------------------------------------
    e2e_ids: list[str] = []
    try:
        if args.tracing:
            off_rates, on_rates = [], []
            off_cpu: list[dict[str, float]] = []
            on_cpu: list[dict[str, float]] = []
            for rep in range(reps):
                rate, run_id, cpu = end_to_end(base, n, {})
                off_rates.append(rate)
                off_cpu.append(cpu)
                e2e_ids.append(run_id)
                rate, run_id, cpu = end_to_end(base, n, traced_env)
                on_rates.append(rate)
                on_cpu.append(cpu)
                e2e_ids.append(run_id)
                log(f"[{rep + 1}/{reps}] end to end: off {off_rates[-1]:,.0f}/s, on {rate:,.0f}/s")
            off, on = median(off_rates), median(on_rates)
            results.append(("end to end vs bare encode", off, bare_encode))
            results.append(("end to end, tracing on, vs bare encode", on, bare_encode))
            extra.append(
                f"tracing on ({traced_env['OTEL_TRACES_SAMPLER']}, share {args.sample_ratio:g}): "
                f"end-to-end ratio {on / bare_encode:.3f} vs {off / bare_encode:.3f} "
                f"off, {100 * (1 - on / off):+.1f}% drop (target: at most 5%); runs off "
                f"{', '.join(f'{r:,.0f}' for r in off_rates)}/s, on "
                f"{', '.join(f'{r:,.0f}' for r in on_rates)}/s"
            )
            extra.append(cpu_table(off_cpu, on_cpu))
        else:
            rate, run_id, _ = end_to_end(base, n, {})
            e2e_ids.append(run_id)
            results.append(("end to end vs bare encode", rate, bare_encode))
    finally:
        with neo4j_driver(base) as driver:
            for prefix in [f"b{run}", *graph_prefixes]:
                driver.execute_query(
                    "MATCH (u:User) WHERE u.id STARTS WITH $p "
                    "OPTIONAL MATCH (u)-[:SENT]->(m) DETACH DELETE u, m",
                    p=prefix,
                )
        for rep_run in runs:
            for name in (f"messages_{rep_run}", f"campaigns_{rep_run}"):
                if client.has_collection(name):
                    client.drop_collection(name)

    print(
        f"\nstreaming path, {n} chitchat messages, {embedder.model_id} ({embedder.dimension}d), "
        f"median of {reps} runs per stage"
    )
    print(f"{'stage':40} {'service/s':>10} {'bare/s':>10} {'ratio':>6}  target")
    for label, service_rate, bare_rate in results:
        target = 0.7 if label.startswith("end") else 0.8
        ratio = service_rate / bare_rate
        verdict = "ok" if ratio >= target else "BELOW"
        print(
            f"{label:40} {service_rate:10,.0f} {bare_rate:10,.0f} {ratio:6.2f}  "
            f">= {target} {verdict}"
        )
    for line in extra:
        print(line)


def cpu_table(off: list[dict[str, float]], on: list[dict[str, float]]) -> str:
    """Median CPU seconds per 1,000 events of each process, tracing off and on."""
    names = [name for name in on[0] if all(name in run for run in off + on)]
    lines = [f"CPU s per 1,000 events (median)   {'off':>6} {'on':>6} {'extra':>6}"]
    for name in names:
        was = median([run[name] for run in off])
        now = median([run[name] for run in on])
        lines.append(f"  {name:32} {was:6.2f} {now:6.2f} {now - was:+6.2f}")
    return "\n".join(lines)


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
    for batch in chunked(rekeyed(enriched, f"s{warm_tag}"), base.graph_writer.batch_size):
        graph.merge_batch(MergeBatch.of_enriched(batch))
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
                lambda rows=graph_rows: bare_merge(base, rows, base.graph_writer.batch_size),
                n,
            )
        )
        own = [
            MergeBatch.of_enriched(batch)
            for batch in chunked(rekeyed(enriched, f"own{runs[rep]}"), base.graph_writer.batch_size)
        ]
        graph_prefixes.append(f"own{runs[rep]}")
        statement_rates.append(
            timed(
                f"[{rep + 1}/{reps}] the service's statement alone (Neo4jGraphStore.merge_batch)",
                lambda batches=own: [graph.merge_batch(b) for b in batches],
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
        log(f"[{rep + 1}/{reps}] graph-writer service loop: {stage:,.0f}/s")
        stage_rates.append(stage)
    graph.close()
    results.append(("graph-writer vs bare UNWIND MERGE", median(stage_rates), median(bare_rates)))
    extra.append(
        f"the graph-writer's statement alone (columns): {median(statement_rates):,.0f}/s "
        f"(the service's loop runs at {median(stage_rates) / median(statement_rates):.2f} of it)"
    )


def bare_encode_main(texts_file: str, batch_size: int) -> None:
    """Child process: the plain library call on the texts; prints messages per second."""
    from sentence_transformers import SentenceTransformer

    texts = json.loads(Path(texts_file).read_text())
    model = SentenceTransformer(str(packaged_model_path()), device="cpu", local_files_only=True)
    model.encode(texts[:64], batch_size=batch_size)  # warm-up, outside the timing
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    print(len(texts) / (time.perf_counter() - started))


if __name__ == "__main__":
    if "--bare-encode" in sys.argv:
        bare_encode_main(
            sys.argv[sys.argv.index("--bare-encode") + 1],
            int(sys.argv[sys.argv.index("--encode-batch") + 1]),
        )
    else:
        main()
