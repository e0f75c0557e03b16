"""The recommender as a supervisor of two worker processes on shared ports
(``MPP_RECOMMENDER__WORKERS=2``, mpp_recommender.workers), on the real servers: the answers of
one process, an erasure and a cache invalidation seen by every worker, /metrics summed over
the workers, a dead worker replaced and a clean stop."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from confluent_kafka import Producer
from mpp_recommender.cache import answer_key

from mpp.stores import redis_client
from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG
from tests.integration.stores.helpers import eventually

from .process import KEY, Running, running_service
from .world import FOOD, TRAVEL, World, read_topic

TWO = {"MPP_RECOMMENDER__WORKERS": "2"}
HEADERS = {"X-API-Key": KEY}


# A client stays on its worker only while its one connection lives: httpx drops a connection
# idle for 5 s by default, and the next one may go to the other worker.
PINNED = httpx.Limits(max_connections=1, keepalive_expiry=600)


def by_worker(service: Running, count: int = 2) -> dict[int, httpx.Client]:
    """A keep-alive client on each worker, each ready (new connections until every worker
    has answered /readyz 200 on one). A connection reset is asked again: one queued on a
    worker just killed (its listening socket closes with the process) is reset."""
    clients: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + 60
    while len(clients) < count and time.monotonic() < deadline:
        client = httpx.Client(base_url=service.http, headers=HEADERS, timeout=10, limits=PINNED)
        try:
            ready = client.get("/readyz")
        except httpx.TransportError:
            client.close()
            time.sleep(0.2)
            continue
        worker = ready.json()["worker"]
        # Only this service's own processes (the supervisor claims its ports, so no other
        # service's workers should share them; checked all the same).
        ours = count == 1 or parent_of(ready.json()["pid"]) == service.pid
        if ready.status_code == 200 and worker not in clients and ours:
            clients[worker] = client
        else:
            client.close()
            time.sleep(0.05)
    assert sorted(clients) == list(range(count)), f"workers answering: {sorted(clients)}"
    return clients


def still_pinned(clients: dict[int, httpx.Client]) -> None:
    """Each client is still on the worker it was pinned to (else the test proved nothing
    about that worker)."""
    for worker, client in clients.items():
        assert client.get("/readyz").json()["worker"] == worker


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.fixture
def two_workers(world: World, tmp_path: Path) -> Iterator[tuple[Running, dict[int, httpx.Client]]]:
    with running_service(world, tmp_path / "recommender.log", **TWO) as running:
        clients = by_worker(running)
        yield running, clients
        for client in clients.values():
            client.close()


def answer_of(body: dict[str, object]) -> tuple[object, ...]:
    items = body["items"]
    assert isinstance(items, list)
    return (
        body["strategy"],
        tuple((i["campaign_id"], round(i["score"], 5)) for i in items),
        tuple(body["degraded_sources"]),  # type: ignore[arg-type]
    )


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the series ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}{{(.*)}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_two_workers_answer_as_one_process_does(world: World, tmp_path: Path) -> None:
    users = {world.user("travel"): TRAVEL, world.user("food"): [FOOD], world.user("new"): []}
    for user, texts in users.items():
        if texts:
            world.write(world.enriched(user, texts, 1_780_000_000_000))
    redis = redis_client(world.settings)

    def fresh(client: httpx.Client, user: str) -> tuple[object, ...]:
        """A computed answer (not the other process's cached one) from every source: a
        source late on a busy machine (a cold Neo4j past its 2 s deadline) makes a degraded
        answer, asked again until a deadline."""
        deadline = time.monotonic() + 90
        while True:
            redis.delete(answer_key(user))
            body = client.get(f"/recommendations/{user}", params={"limit": 5}).json()
            assert body["cached"] is False
            if not body["degraded_sources"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not body["degraded_sources"], (user, body)
        return answer_of(body)

    with running_service(world, tmp_path / "one.log") as one:
        single = by_worker(one, count=1)[0]
        expected = {user: fresh(single, user) for user in users}
        single.close()
    assert expected[world.user("travel")][1][0][0] == "travel-summer"  # type: ignore[index]
    assert expected[world.user("new")][0] != "personalized"

    with running_service(world, tmp_path / "two.log", **TWO) as two:
        clients = by_worker(two)
        for worker, client in clients.items():
            for user in users:
                assert fresh(client, user) == expected[user], (worker, user)
        still_pinned(clients)
        # gRPC too, each call on a connection of its own (spread over the workers).
        for user in users:
            deadline = time.monotonic() + 90
            while True:
                redis.delete(answer_key(user))
                with grpc.insecure_channel(
                    two.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
                ) as channel:
                    answer = RG.RecommenderStub(channel).Recommend(
                        R.RecommendRequest(user_id=user, limit=5),
                        metadata=(("authorization", f"Bearer {KEY}"),),
                    )
                if not answer.degraded_sources or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            got = (
                answer.strategy,
                tuple((i.campaign_id, round(i.score, 5)) for i in answer.items),
                tuple(answer.degraded_sources),
            )
            assert got == expected[user], user
        for client in clients.values():
            client.close()
    redis.close()


def test_an_erasure_reaches_every_worker(
    world: World, two_workers: tuple[Running, dict[int, httpx.Client]]
) -> None:
    service, clients = two_workers
    user = world.user("erased")
    messages = world.enriched(user, TRAVEL, 1_780_000_000_000)
    world.write(messages)
    ids = {m.message.message_id for m in messages}
    for client in clients.values():
        client.get(f"/recommendations/{user}")
        assert client.get(f"/recommendations/{user}").json()["cached"] is True
    seen = {w: c.get("/readyz").json()["erasures_seen"] for w, c in clients.items()}

    erased = clients[0].delete(f"/users/{user}")
    assert erased.status_code == 200, erased.text
    # Worker 1 was not asked: it learns of the erasure from the topic.
    for worker, client in clients.items():
        assert eventually(
            lambda c=client, w=worker: c.get("/readyz").json()["erasures_seen"] > seen[w],
            timeout_s=20,
        ), worker
        body = client.get(f"/recommendations/{user}").json()
        reasons = [r for item in body["items"] for r in item["reasons"]]
        assert not ids & {r.get("message_id") for r in reasons}, (worker, body)
        assert body["strategy"] != "personalized"

    # Feedback stamped before the erasure is dropped by both workers; after it, recorded.
    before = "2026-01-01T00:00:00Z"
    for worker, client in clients.items():
        sent = client.post(
            "/feedback",
            json={
                "user_id": user,
                "campaign_id": "travel-summer",
                "type": "click",
                "timestamp": before,
                "feedback_id": f"{user}-old-{worker}",
            },
        )
        assert sent.status_code == 200, sent.text
    later = clients[1].post(
        "/feedback",
        json={
            "user_id": user,
            "campaign_id": "travel-summer",
            "type": "click",
            "feedback_id": f"{user}-new",
        },
    )
    assert later.status_code == 200, later.text
    recorded = {
        F.FeedbackEvent.FromString(m.value()).feedback_id
        for m in read_topic(world.settings, world.settings.kafka.topics.feedback, 1)
    }
    assert recorded == {f"{user}-new"}
    metrics = clients[0].get("/metrics").text
    assert metric(metrics, "mpp_recommender_feedback_of_erased_total") == 2
    still_pinned(clients)
    assert service.pid > 0


def test_a_new_message_refreshes_every_workers_answer(
    world: World, two_workers: tuple[Running, dict[int, httpx.Client]]
) -> None:
    _, clients = two_workers
    user = world.user("fresh")
    world.write(world.enriched(user, TRAVEL, 1_780_000_000_000))
    for client in clients.values():
        client.get(f"/recommendations/{user}")
        assert client.get(f"/recommendations/{user}").json()["cached"] is True
    # What the embedder publishes: one follower (the group's) drops the shared cached answer.
    new = world.enriched(user, [FOOD], 1_780_000_100_000)[0]
    producer = Producer(world.settings.kafka.client_config())
    producer.produce(
        world.settings.kafka.topics.enriched, new.SerializeToString(), key=user.encode()
    )
    assert producer.flush(10) == 0

    def names_new(client: httpx.Client) -> bool:
        body = client.get(f"/recommendations/{user}").json()
        return new.message.message_id in {
            r.get("message_id") for item in body["items"] for r in item["reasons"]
        }

    for worker, client in clients.items():
        assert eventually(lambda c=client: names_new(c), timeout_s=20), worker
    still_pinned(clients)


def test_metrics_sum_the_workers_and_a_dead_worker_is_replaced(
    world: World, two_workers: tuple[Running, dict[int, httpx.Client]]
) -> None:
    service, clients = two_workers

    def requests_total(client: httpx.Client) -> float:
        return metric(client.get("/metrics").text, "mpp_requests_total", api="http")

    start = requests_total(clients[0])
    for worker, client in clients.items():
        for _ in range(3 + worker):
            assert client.get(f"/recommendations/{world.user('counted')}").status_code == 200
    # 3 + 4 requests, whichever worker is asked.
    assert requests_total(clients[1]) == requests_total(clients[0]) == start + 7
    still_pinned(clients)

    pids = {w: c.get("/readyz").json()["pid"] for w, c in clients.items()}
    assert len(set(pids.values())) == 2 and service.pid not in pids.values()
    os.kill(pids[1], signal.SIGKILL)
    clients[1].close()
    # Worker 0 answers meanwhile; worker 1 comes back as a new process.
    assert clients[0].get(f"/recommendations/{world.user('counted')}").status_code == 200
    again = by_worker(service)
    still_pinned(again)
    assert again[0].get("/readyz").json()["pid"] == pids[0]
    assert again[1].get("/readyz").json()["pid"] != pids[1]
    assert "worker_exited" in service.log.read_text()
    for client in again.values():
        client.close()
