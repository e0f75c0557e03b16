"""Recommender latency and throughput under a compiled closed-loop load generator.

gRPC and HTTP, cache hit and miss, at concurrency 1, 16 and 64, beside the generator's own
ceiling and a bare Redis GET and a bare Milvus search in the same run.

    .venv/bin/python bench/recommender.py [--seconds 5] [--concurrency 1 16 64] [--users 300]
                                          [--workers 1 2] [--loaded] [--grpc-connections 0]

Needs the local stack (``make up``). The run has a PostgreSQL database, Kafka topics, Milvus
collections, user ids and Redis keys of its own, all removed afterwards (bench/
recommender_world.py). The service runs as its own process (``python -m mpp_recommender``,
authentication on). The client is bench/loadgen (Go, built once and cached; bench/
load_generator.py): ``concurrency`` workers, each with one request in flight at all times,
HTTP/1.1 keep-alive (one connection per worker) or gRPC unary calls (``--grpc-connections``
connections shared by the workers), the requests serialized here with the real protobuf
classes.

- generator ceiling: the generator against its own trivial server (a fixed small answer),
  same requests and concurrency: what it can measure at most on this machine;
- hit: every request is for a (user, limit) the service answered just before (one HGET); the
  set is answered again before each concurrency's hit runs, so no cached answer expires
  (``cache_ttl_s``) during them;
- miss: every request is for a (user, limit) never asked before, so all three sources run;
- hit rate: the share of answers that say they came from the cache (gRPC: the
  RecommendResponse's ``cached``, field 4, set; HTTP: the JSON holds ``"cached":true``);
- bare Redis GET: the same size of value as a cached answer (redis.asyncio); bare Milvus
  search: the campaign collection with a user vector, what the Milvus source's last step does
  (pymilvus on threads). Both are Python clients, as before.

- Feast feature server (HTTP): the peer of issue #17, Feast's ``feast serve`` (one worker, as
  the service is one process; bench/feast_peer.py) over the same Redis, serving each hot
  user's (campaign id, score) list as the service answered it, through the same generator
  (POST /get-online-features); its hit rate is the share of answers holding a non-empty list.
  The table's notes give the service's HTTP cache hit over it, requests/s and p99. Feast
  lives in a virtualenv of its own, built the first time (minutes); ``--no-feast`` skips it.

``--loaded`` measures everything again with one busy process per core (normal priority).
Targets: issue #5 (cache-hit p99 at most 5 ms, miss p99 at most 50 ms) and issue #17 (cache
hit p99 at most 3 ms at concurrency 16 on gRPC; at 64, at least 1.7x the single-process
requests/s; miss p99 at most 10 ms at concurrency 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import grpc
import numpy as np
import redis.asyncio as aioredis
from feast_peer import FeastPeer, feast_peer
from load_generator import Figures, Request, busy_cores, run, trivial_server
from recommender_report import print_summary, print_table
from recommender_world import KEY, MESSAGES_PER_USER, clean, isolated, seed, start_service

from mpp.config import Settings
from mpp.pipeline import log
from mpp.stack import Stack
from mpp.stores import milvus_client
from mpp.stores.milvus import MilvusVectorStore
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG

RECOMMEND = "/mpp.v1.Recommender/Recommend"
HOT_USERS = 200
HOT_LIMIT = 10
# How each door's answer says it came from the cache, and what a good answer holds.
GRPC_CHECKS = (f"-header=authorization: Bearer {KEY}", "-hit-field=4", "-expect-field=2")
HTTP_CHECKS = (f"-header=X-API-Key: {KEY}", '-hit-bytes="cached":true', '-expect-bytes="items":[{')


def feast_row(
    peer: FeastPeer | None, users: list[str], concurrency: int, seconds: float
) -> list[Figures]:
    """The Feast peer's row: the hot users' lists over its HTTP API (none without a peer)."""
    if peer is None:
        return []
    requests = [Request("/get-online-features", peer.body(u)) for u in users]
    checks = [f"-header=Content-Type: {peer.HEADERS['Content-Type']}"]
    checks += [f"-hit-bytes={peer.NONEMPTY.decode()}", f"-warmup={min(1.0, seconds / 5)}"]
    result = run(requests, "http", peer.base, concurrency, seconds, *checks)
    return [Figures.of_run("Feast feature server (HTTP)", result)]


def grpc_requests(pairs: list[tuple[str, int]]) -> list[Request]:
    return [
        Request(RECOMMEND, R.RecommendRequest(user_id=u, limit=n).SerializeToString())
        for u, n in pairs
    ]


def http_requests(pairs: list[tuple[str, int]]) -> list[Request]:
    return [Request(f"/recommendations/{u}?limit={n}") for u, n in pairs]


class Doors:
    """The two front doors of one server, and how to load each."""

    def __init__(self, http: str, target: str, grpc_connections: int, seconds: float) -> None:
        self.http, self.target = http, target
        self.grpc_connections = grpc_connections
        self.seconds = seconds

    def load(
        self, name: str, pairs: list[tuple[str, int]], concurrency: int, *options: str
    ) -> list[tuple[Figures, int]]:
        """Both doors' figures for requests of ``pairs``, each with how many requests it
        sent; a warm-up of a second (not with ``-once``) comes before the measurement."""
        warmup = () if "-once" in options else (f"-warmup={min(1.0, self.seconds / 5)}",)
        out = []
        # 0: a connection per client worker, which several server workers share out.
        conns = f"-conns={self.grpc_connections or concurrency}"
        for door, requests, target, checks in (
            ("gRPC", grpc_requests, self.target, (*GRPC_CHECKS, conns)),
            ("HTTP", http_requests, self.http, HTTP_CHECKS),
        ):
            if not pairs:
                log(f"{door} {name}: no request left to send (more --users give more)")
                continue
            result = run(
                requests(pairs),
                door.lower(),
                target,
                concurrency,
                self.seconds,
                *checks,
                *warmup,
                *options,
            )
            if result["exhausted"]:
                log(f"{door} {name}: all {len(pairs)} requests sent before the time was up")
            out.append((Figures.of_run(f"{door} {name}", result), result["requests"]))
            if "-once" in options:
                pairs = pairs[result["requests"] :]
        return out


async def closed_loop(
    call: Callable[[int], Awaitable[None]], concurrency: int, seconds: float
) -> tuple[list[float], float]:
    """``concurrency`` workers calling ``call(i)`` back to back for ``seconds``; returns
    every call's latency and the elapsed time (the bare Redis baseline's Python client)."""
    latencies: list[float] = []
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < deadline:
            i = counter
            counter += 1
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def bench_redis(
    settings: Settings, run_id: str, concurrency: int, seconds: float, value: bytes
) -> Figures:
    client = aioredis.Redis.from_url(settings.redis.url)
    keys = [f"mpp:bench:{run_id}:{i}" for i in range(200)]
    for key in keys:
        await client.set(key, value, ex=300)

    async def get(i: int) -> None:
        await client.get(keys[i % len(keys)])

    lat, el = await closed_loop(get, concurrency, seconds)
    await client.delete(*keys)
    await client.aclose()
    return Figures.of_latencies("bare Redis GET", concurrency, lat, el)


def bench_milvus(settings: Settings, users: list[str], concurrency: int, seconds: float) -> Figures:
    store = MilvusVectorStore(settings)
    vectors = [np.asarray(v.embedding) for v in store.user_vectors(users[0], limit=10)]
    vector = np.mean(vectors, axis=0).tolist()
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
    return Figures.of_latencies(
        "bare Milvus search", concurrency, latencies, time.perf_counter() - started
    )


def measure(
    args: argparse.Namespace,
    settings: Settings,
    run_id: str,
    service: Doors,
    trivial: Doors,
    users: list[str],
    misses: list[tuple[str, int]],
    value: bytes,
    peer: FeastPeer | None,
    baselines: bool,
) -> list[Figures]:
    """Every row at every concurrency (the generator's ceiling, the peer and the bare store
    calls only with ``baselines``); ``misses`` loses the pairs it asked."""
    rows: list[Figures] = []
    hot = [(u, HOT_LIMIT) for u in users[:HOT_USERS]]
    for concurrency in args.concurrency:
        log(f"concurrency {concurrency}")
        if baselines:
            rows += [f for f, _ in trivial.load("generator ceiling", hot, concurrency)]
        # Answer the hot set again, so that no cached answer expires during the hit runs.
        run(grpc_requests(hot), "grpc", service.target, 8, 60, *GRPC_CHECKS, "-once")
        rows += [f for f, _ in service.load("cache hit", hot, concurrency)]
        if baselines:
            rows += feast_row(peer, users[:HOT_USERS], concurrency, args.seconds)
        for figures, sent in service.load("cache miss", misses, concurrency, "-once"):
            rows.append(figures)
            del misses[:sent]
        if baselines:
            rows.append(
                asyncio.run(bench_redis(settings, run_id, concurrency, args.seconds, value))
            )
            rows.append(bench_milvus(settings, users, concurrency, args.seconds))
    return rows


def warm(target: str, users: list[str]) -> dict[str, R.RecommendResponse]:
    """Every user's answer once (limit 10), which caches it."""
    stub = RG.RecommenderStub(grpc.insecure_channel(target))
    metadata = (("authorization", f"Bearer {KEY}"),)
    return {
        user: stub.Recommend(R.RecommendRequest(user_id=user, limit=HOT_LIMIT), metadata=metadata)
        for user in users
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=sorted({1, os.cpu_count() or 1}),
        help="the service's worker processes, each count measured in turn (default: 1 and "
        "one per core)",
    )
    parser.add_argument(
        "--grpc-connections",
        type=int,
        default=0,
        help="gRPC connections of the generator (default 0: one per client worker)",
    )
    parser.add_argument(
        "--loaded", action="store_true", help="measure again with one busy process per core"
    )
    parser.add_argument("--no-feast", action="store_true", help="no Feast peer row")
    args = parser.parse_args()
    base = Settings()
    Stack(base).up(lambda m: None)
    run_id = uuid.uuid4().hex[:8]
    settings = isolated(base, run_id)
    try:
        log(f"seeding {args.users} users x {MESSAGES_PER_USER} messages")
        users = seed(settings, run_id, args.users)
        misses = [(u, limit) for u in users for limit in range(11, 101)]
        random.Random(1).shuffle(misses)
        with ExitStack() as stack:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            t_http, t_grpc = stack.enter_context(trivial_server())
            trivial = Doors(t_http, t_grpc, args.grpc_connections, args.seconds)
            peer, value = None, b""
            for busy in [0] + ([os.cpu_count() or 1] if args.loaded else []):
                by_workers: dict[int, list[Figures]] = {}
                for n, workers in enumerate(args.workers):
                    with running(settings, home, workers) as (http, target):
                        log(f"{workers} worker(s) ready; warming the cache (every user once)")
                        answers = warm(target, users)
                        value = answers[users[-1]].SerializeToString()
                        if peer is None and not args.no_feast:
                            lists = {
                                u: [(i.campaign_id, i.score) for i in answers[u].items]
                                for u in users[:HOT_USERS]
                            }
                            (home / "feast").mkdir()
                            peer = stack.enter_context(feast_peer(base, lists, home / "feast"))
                        service = Doors(http, target, args.grpc_connections, args.seconds)
                        with busy_cores(busy) if busy else nullcontext(busy):
                            by_workers[workers] = measure(
                                args,
                                settings,
                                run_id,
                                service,
                                trivial,
                                users,
                                misses,
                                value,
                                peer,
                                baselines=n == 0,
                            )
                machine = f"{busy} busy processes (one per core)" if busy else "no other load"
                for workers, rows in by_workers.items():
                    print_table(
                        f"recommender bench{' (loaded)' if busy else ''}, {workers} worker "
                        f"process(es): {len(users)} users, {args.seconds:g} s per line, cached "
                        f"answer {len(value)} bytes; {os.cpu_count()} cores, {machine}",
                        rows,
                    )
                print_summary(by_workers)
    finally:
        clean(settings, run_id)
    return 0


@contextmanager
def running(settings: Settings, home: Path, workers: int) -> Iterator[tuple[str, str]]:
    """The service with ``workers`` worker processes until the block ends."""
    process, http, target = start_service(settings, home, workers)
    try:
        yield http, target
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


if __name__ == "__main__":
    sys.exit(main())
