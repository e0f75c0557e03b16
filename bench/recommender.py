"""Recommender latency and throughput over gRPC and HTTP, cache hit and miss, at two
concurrencies, beside a bare Redis GET and a bare Milvus search in the same run.

    .venv/bin/python bench/recommender.py [--seconds 5] [--concurrency 16 64] [--users 300]

Needs the local stack (``make up``). The run has a PostgreSQL database, Kafka topics, Milvus
collections, user ids and Redis keys of its own, all removed afterwards. The service runs as
its own process (``python -m mpp_recommender``, authentication on); the clients run in this
process on asyncio (grpc.aio, httpx, redis.asyncio; the Milvus baseline on threads, pymilvus
being synchronous), each closed-loop: ``concurrency`` requests in flight at all times.

Data: the default catalog (15 campaigns, their vectors from the packaged model), and ``users``
users with 10 chat messages each (real embeddings of chitchat messages) in Milvus and Neo4j,
intents and campaign links as the embedder tags them.

- hit: every request is for a (user, limit) the service answered before (one HGET);
- miss: every request is for a (user, limit) never asked before, so all three sources run;
- bare Redis GET: the same size of value as a cached answer; bare Milvus search: the campaign
  collection with a user vector, what the Milvus source's last step does.
Targets (issue #5): cache-hit p99 at most 5 ms, miss p99 at most 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import psycopg
import redis.asyncio as aioredis

from mpp.auth import key_entry
from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.db import migrate
from mpp.embedding import Embedder
from mpp.intents import campaign_text
from mpp.kafka import ensure_topics
from mpp.kafka.testing import isolated_kafka
from mpp.pipeline import free_port, log
from mpp.samples import chitchat_events
from mpp.stack import Stack, repo_root
from mpp.stores import milvus_client, redis_client
from mpp.stores.campaigns import upsert_campaigns
from mpp.stores.graph_rows import MessageNode
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.stores.vector_rows import CampaignVector, MessageVector
from mpp.v1 import events_pb2 as E
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG

KEY = "bench-key"
MESSAGES_PER_USER = 10


def isolated(settings: Settings, run: str) -> Settings:
    kafka = isolated_kafka(settings.kafka, run, create=False, group_prefix=f"bench-{run}")
    milvus = settings.milvus.model_copy(
        update={
            "messages_collection": f"b_{run}_messages",
            "campaigns_collection": f"b_{run}_campaigns",
        }
    )
    postgres = settings.postgres.model_copy(update={"database": f"mpp_bench_{run}"})
    return settings.model_copy(update={"kafka": kafka, "milvus": milvus, "postgres": postgres})


def seed(settings: Settings, run: str, users: int) -> list[str]:
    """Catalog, campaign vectors, and each user's messages in Milvus and Neo4j."""
    from mpp_embedder.service import build_enricher

    admin = settings.postgres.model_copy(update={"database": "mpp"}).conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{settings.postgres.database}"')
    migrate(settings.postgres.conninfo())
    campaigns = parse_campaigns(default_campaigns_path())
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        upsert_campaigns(conn, campaigns)
    ensure_topics(settings.kafka)
    embedder = Embedder()
    enricher = build_enricher(settings, embedder)
    enricher.linker.update(campaigns)
    store = MilvusVectorStore(settings)
    vectors = embedder.encode([campaign_text(c) for c in campaigns])
    store.upsert_campaigns(
        [
            CampaignVector(c.campaign_id, v, c.active, 0, 0)
            for c, v in zip(campaigns, vectors, strict=True)
        ]
    )
    texts = [
        e["message"] for e in chitchat_events(users * MESSAGES_PER_USER) if e["message"].strip()
    ]
    rng = random.Random(7)
    ids = [f"{run}-u{i}" for i in range(users)]
    validated = []
    for n in range(users * MESSAGES_PER_USER):
        message = E.ValidatedMessage(
            message_id=f"{run}-m{n}", user_id=ids[n % users], text=rng.choice(texts)
        )
        message.timestamp.FromMilliseconds(1_780_000_000_000 + n * 1000)
        validated.append(message)
    enriched = enricher.enrich(validated)
    store.upsert_messages([MessageVector.from_enriched(e) for e in enriched])
    graph = Neo4jGraphStore(settings)
    for start in range(0, len(enriched), 1000):
        graph.merge_messages([MessageNode.from_enriched(e) for e in enriched[start : start + 1000]])
    graph.close()
    store.close()
    return ids


def clean(settings: Settings, run: str) -> None:
    client = milvus_client(settings)
    for name in (settings.milvus.messages_collection, settings.milvus.campaigns_collection):
        if client.has_collection(name):
            client.drop_collection(name)
    graph = Neo4jGraphStore(settings)
    graph._driver.execute_query("MATCH (n) WHERE n.id STARTS WITH $p DETACH DELETE n", p=f"{run}-")
    graph.close()
    r = redis_client(settings)
    keys = list(r.scan_iter(match=f"mpp:*{run}-*", count=1000))
    for start in range(0, len(keys), 1000):
        r.delete(*keys[start : start + 1000])
    admin = settings.postgres.model_copy(update={"database": "mpp"}).conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{settings.postgres.database}" WITH (FORCE)')


def start_service(settings: Settings, home: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    http_port, grpc_port = free_port(), free_port()
    topics = settings.kafka.topics
    # The run's own settings; MPP_RECOMMENDER__* from the environment pass through, so that
    # settings can be compared (e.g. MPP_RECOMMENDER__GRPC_WORKERS=8).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MPP_") or k.startswith("MPP_RECOMMENDER__")
    }
    env.update(
        {
            f"MPP_KAFKA__TOPICS__{n.upper()}": getattr(topics, n)
            for n in ("raw", "validated", "enriched", "dlq", "feedback", "erasure")
        }
    )
    env.update(
        {
            "MPP_KAFKA__GROUP_PREFIX": settings.kafka.group_prefix,
            "MPP_POSTGRES__DATABASE": settings.postgres.database,
            "MPP_MILVUS__MESSAGES_COLLECTION": settings.milvus.messages_collection,
            "MPP_MILVUS__CAMPAIGNS_COLLECTION": settings.milvus.campaigns_collection,
            "MPP_HTTP__PORT": str(http_port),
            "MPP_GRPC__PORT": str(grpc_port),
            # Authentication on, with a rate limit far above what the bench asks.
            "MPP_AUTH__KEYS": json.dumps(
                [key_entry("bench", KEY, ["admin"], rate_per_s=1e9, burst=1_000_000)]
            ),
            "MPP_LOG_LEVEL": "WARNING",
        }
    )
    out = (home / "recommender.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mpp_recommender"], env=env, cwd=repo_root(), stdout=out, stderr=out
    )
    http = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError((home / "recommender.log").read_text()[-2000:])
        try:
            if httpx.get(f"{http}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the recommender did not get ready in 90 s")
        time.sleep(0.2)
    return process, http, f"127.0.0.1:{grpc_port}"


class Stats:
    def __init__(self, name: str, latencies: list[float], seconds: float) -> None:
        self.name = name
        self.count = len(latencies)
        ordered = sorted(latencies)
        self.p50 = ordered[len(ordered) // 2] * 1000 if ordered else float("nan")
        self.p99 = (
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
            if ordered
            else float("nan")
        )
        self.rate = self.count / seconds if seconds else 0.0

    def row(self, concurrency: int) -> str:
        return (
            f"| {self.name} | {concurrency} | {self.p50:.2f} | {self.p99:.2f} "
            f"| {self.rate:,.0f} | {self.count} |"
        )


async def closed_loop(
    call: Callable[[int], Awaitable[None]],
    concurrency: int,
    seconds: float,
    limit: int | None = None,
) -> tuple[list[float], float]:
    """``concurrency`` workers calling ``call(i)`` back to back for ``seconds`` (or ``limit``
    calls); returns every call's latency and the elapsed time."""
    latencies: list[float] = []
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < deadline and (limit is None or counter < limit):
            i = counter
            counter += 1
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


class HttpConnection:
    """A minimal HTTP/1.1 keep-alive client: httpx costs ~2 ms of CPU a request, which on two
    cores measured the client more than the server."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self._address = (host, int(port))
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, base: str) -> HttpConnection:
        return cls(base)

    async def get(self, path: str) -> tuple[int, bytes]:
        try:
            return await self._get(path)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed an idle keep-alive connection: reconnect once.
            self._reader = None
            return await self._get(path)

    async def _get(self, path: str) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(*self._address)
        self._writer.write(
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {KEY}\r\n\r\n".encode()
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self._reader.readexactly(length)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def bench_service(
    http: str,
    target: str,
    users: list[str],
    concurrency: int,
    seconds: float,
    misses: list[tuple[str, int]],
) -> list[Stats]:
    out = []
    metadata = (("authorization", f"Bearer {KEY}"),)
    connections = [await HttpConnection.open(http) for _ in range(concurrency)]
    free = list(connections)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = RG.RecommenderStub(channel)
        errors = 0

        async def grpc_call(user: str, limit: int) -> None:
            nonlocal errors
            answer = await stub.Recommend(
                R.RecommendRequest(user_id=user, limit=limit), metadata=metadata
            )
            if not answer.items:
                errors += 1

        async def http_call(user: str, limit: int) -> None:
            nonlocal errors
            connection = free.pop()
            try:
                status, body = await connection.get(f"/recommendations/{user}?limit={limit}")
            finally:
                free.append(connection)
            if status != 200 or b'"items":[{' not in body:
                errors += 1

        # Hits: at most 200 users with limit 10, all answered once before.
        hot = users[: min(len(users), 200)]
        for door, call in (("gRPC", grpc_call), ("HTTP", http_call)):
            lat, el = await closed_loop(
                lambda i, c=call: c(hot[i % len(hot)], 10), concurrency, seconds
            )
            out.append(Stats(f"{door} cache hit", lat, el))
        # Misses: (user, limit) pairs never asked.
        for door, call in (("gRPC", grpc_call), ("HTTP", http_call)):
            pairs = list(misses)
            lat, el = await closed_loop(
                lambda i, c=call, p=pairs: c(*p[i]), concurrency, seconds, len(pairs)
            )
            del misses[: len(lat)]
            out.append(Stats(f"{door} cache miss", lat, el))
        if errors:
            log(f"{errors} requests failed or came back empty")
    for connection in connections:
        connection.close()
    return out


async def bench_redis(
    settings: Settings, run: str, concurrency: int, seconds: float, value: bytes
) -> Stats:
    client = aioredis.Redis.from_url(settings.redis.url)
    keys = [f"mpp:bench:{run}:{i}" for i in range(200)]
    for key in keys:
        await client.set(key, value, ex=300)

    async def get(i: int) -> None:
        await client.get(keys[i % len(keys)])

    lat, el = await closed_loop(get, concurrency, seconds)
    await client.delete(*keys)
    await client.aclose()
    return Stats("bare Redis GET", lat, el)


def bench_milvus(settings: Settings, users: list[str], concurrency: int, seconds: float) -> Stats:
    store = MilvusVectorStore(settings)
    vectors = [np.asarray(v.embedding) for v in store.user_vectors(users[0], limit=10)]
    vector = (sum(vectors) / len(vectors)).tolist()
    client = milvus_client(settings)
    name = settings.milvus.campaigns_collection
    client.search(name, data=[vector], limit=50, output_fields=["campaign_id"])
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            client.search(name, data=[vector], limit=50, output_fields=["campaign_id"])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    store.close()
    return Stats("bare Milvus search", latencies, time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--users", type=int, default=300)
    args = parser.parse_args()
    base = Settings()
    Stack(base).up(lambda m: None)
    run = uuid.uuid4().hex[:8]
    settings = isolated(base, run)
    process = None
    try:
        log(f"seeding {args.users} users x {MESSAGES_PER_USER} messages")
        users = seed(settings, run, args.users)
        with tempfile.TemporaryDirectory() as home:
            process, http, target = start_service(settings, Path(home))
            log("service ready; warming the cache (every user once, limit 10)")
            stub = RG.RecommenderStub(grpc.insecure_channel(target))
            metadata = (("authorization", f"Bearer {KEY}"),)
            value = b""
            for user in users:
                value = stub.Recommend(
                    R.RecommendRequest(user_id=user, limit=10), metadata=metadata
                ).SerializeToString()
            misses = [(u, limit) for u in users for limit in range(11, 101)]
            random.Random(1).shuffle(misses)
            rows = []
            for concurrency in args.concurrency:
                log(f"concurrency {concurrency}")
                for stats in asyncio.run(
                    bench_service(http, target, users, concurrency, args.seconds, misses)
                ):
                    rows.append(stats.row(concurrency))
                rows.append(
                    asyncio.run(bench_redis(settings, run, concurrency, args.seconds, value)).row(
                        concurrency
                    )
                )
                rows.append(
                    bench_milvus(settings, users, concurrency, args.seconds).row(concurrency)
                )
            print(
                f"\nrecommender bench: {len(users)} users, {args.seconds:.0f} s per line, "
                f"cached answer {len(value)} bytes"
            )
            print("| what | concurrency | p50 ms | p99 ms | requests/s | requests |")
            print("|---|---|---|---|---|---|")
            for row in rows:
                print(row)
            print("targets: cache-hit p99 <= 5 ms, miss p99 <= 50 ms")
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        clean(settings, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
