"""``python -m mpp_recommender`` as a process on the real servers: both front doors, the same
answer, authentication, key scopes, rate limits, body and message limits, validation errors
naming the field, health, reflection, metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from mpp.auth import key_entry
from mpp.pipeline import free_port
from mpp.stack import repo_root
from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG

from .test_recommender import TRAVEL, World
from .test_recommender import world as world  # the fixture

KEY = "test-key-1"  # admin
READ, WRITE, ERASE = "test-reader", "test-writer", "test-eraser"
SLOW_HTTP, SLOW_GRPC = "test-slow-http", "test-slow-grpc"
KEYS = [
    key_entry("other", "other-key", ["admin"]),
    key_entry("admin", KEY, ["admin"]),
    key_entry("reader", READ, ["recommendations:read"]),
    key_entry("writer", WRITE, ["feedback:write"]),
    key_entry("eraser", ERASE, ["users:erase"]),
    # Two requests at once, then one every 2 s.
    key_entry("slow-http", SLOW_HTTP, ["recommendations:read"], rate_per_s=0.5, burst=2),
    key_entry("slow-grpc", SLOW_GRPC, ["recommendations:read"], rate_per_s=0.5, burst=2),
]


@dataclass
class Running:
    http: str
    grpc_target: str
    log: Path


def service_env(world: World, http_port: int, grpc_port: int) -> dict[str, str]:
    s = world.settings
    topics = s.kafka.topics
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPP_")}
    env.update(
        {
            f"MPP_KAFKA__TOPICS__{name.upper()}": getattr(topics, name)
            for name in ("raw", "validated", "enriched", "dlq", "feedback", "erasure")
        }
    )
    env.update(
        {
            "MPP_KAFKA__GROUP_PREFIX": s.kafka.group_prefix,
            "MPP_POSTGRES__DATABASE": s.postgres.database,
            "MPP_MILVUS__MESSAGES_COLLECTION": s.milvus.messages_collection,
            "MPP_MILVUS__CAMPAIGNS_COLLECTION": s.milvus.campaigns_collection,
            "MPP_HTTP__PORT": str(http_port),
            "MPP_GRPC__PORT": str(grpc_port),
            # The keys' SHA-256 only.
            "MPP_AUTH__KEYS": json.dumps(KEYS),
        }
    )
    return env


@pytest.fixture
def service(world: World, tmp_path: Path) -> Iterator[Running]:
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path / "recommender.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mpp_recommender"],
            env=service_env(world, http_port, grpc_port),
            cwd=repo_root(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Running(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{running.http}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no /readyz 200 within 60 s"
            time.sleep(0.2)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(20) == 0, log.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()


def errors(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["message"] for e in response.json()["errors"]}


def test_grpc_and_http_give_the_same_answer_behind_authentication(
    world: World, service: Running
) -> None:
    user = world.user("both")
    world.write(world.enriched(user, TRAVEL, 1_780_000_000_000))
    channel = grpc.insecure_channel(service.grpc_target)
    stub = RG.RecommenderStub(channel)
    auth = (("authorization", f"Bearer {KEY}"),)

    # gRPC: no token, a wrong one, then the right one.
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        with pytest.raises(grpc.RpcError) as denied:
            stub.Recommend(R.RecommendRequest(user_id=user, limit=5), metadata=metadata)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answer = stub.Recommend(R.RecommendRequest(user_id=user, limit=5), metadata=auth)
    assert answer.items[0].campaign_id == "travel-summer" and answer.strategy == "personalized"
    assert any(r.message_id for r in answer.items[0].reasons)

    # HTTP: the same answer (from the cache now), with either header form.
    url = f"{service.http}/recommendations/{user}"
    assert httpx.get(url, params={"limit": 5}).status_code == 401
    assert "missing API key" in errors(httpx.get(url, params={"limit": 5}))["X-API-Key"]
    assert httpx.get(url, headers={"X-API-Key": "nope"}).status_code == 401
    by_key = httpx.get(url, params={"limit": 5}, headers={"X-API-Key": KEY})
    by_bearer = httpx.get(url, params={"limit": 5}, headers={"Authorization": f"Bearer {KEY}"})
    assert by_key.status_code == by_bearer.status_code == 200
    body = by_key.json()
    assert body["recommendation_id"] == answer.recommendation_id and body["cached"] is True
    assert [i["campaign_id"] for i in body["items"]] == [i.campaign_id for i in answer.items]
    assert body["items"][0]["reasons"][0]["detail"]

    # Bad input: the field and the fix, never a crash.
    with pytest.raises(grpc.RpcError) as bad:
        stub.Recommend(R.RecommendRequest(user_id="bad user!", limit=5), metadata=auth)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details().startswith("user_id:")
    with pytest.raises(grpc.RpcError) as bad_limit:
        stub.Recommend(R.RecommendRequest(user_id=user, limit=101), metadata=auth)
    assert "limit" in bad_limit.value.details() and "1-100" in bad_limit.value.details()
    headers = {"X-API-Key": KEY}
    too_many = httpx.get(url, params={"limit": 500}, headers=headers)
    assert too_many.status_code == 422 and "limit" in errors(too_many)
    not_a_number = httpx.get(url, params={"limit": "ten"}, headers=headers)
    assert "ten" in errors(not_a_number)["limit"]
    bad_user = httpx.get(f"{service.http}/recommendations/bad%20user!", headers=headers)
    assert bad_user.status_code == 422 and "letters, digits" in errors(bad_user)["user_id"]
    bad_locale = httpx.get(url, params={"locale": "english!"}, headers=headers)
    assert bad_locale.status_code == 422 and "BCP 47" in errors(bad_locale)["locale"]
    with pytest.raises(grpc.RpcError) as bad_channel:
        stub.Recommend(R.RecommendRequest(user_id=user, channel="In App!"), metadata=auth)
    assert "channel" in bad_channel.value.details()
    no_type = httpx.post(
        f"{service.http}/feedback", json={"user_id": user, "campaign_id": "x"}, headers=headers
    )
    assert no_type.status_code == 422 and "type" in errors(no_type)
    wrong = httpx.post(
        f"{service.http}/feedback",
        json={"user_id": user, "campaign_id": "book-club", "type": "like", "extra": 1},
        headers=headers,
    )
    assert set(errors(wrong)) == {"type", "extra"}
    not_json = httpx.post(f"{service.http}/feedback", content=b"{oops", headers=headers)
    assert not_json.status_code == 422

    # Feedback through both doors.
    sent = httpx.post(
        f"{service.http}/feedback",
        json={
            "user_id": user,
            "campaign_id": "travel-summer",
            "type": "dismissal",
            "timestamp": "2026-06-01T10:00:00Z",
            "recommendation_id": answer.recommendation_id,
        },
        headers=headers,
    )
    assert sent.status_code == 200 and sent.json()["feedback_id"].startswith("f-")
    after = httpx.get(url, params={"limit": 5}, headers=headers).json()
    assert "travel-summer" not in [i["campaign_id"] for i in after["items"]]
    event = F.FeedbackEvent(user_id=user, campaign_id="book-club", type=F.FEEDBACK_TYPE_CLICK)
    recorded = stub.RecordFeedback(R.RecordFeedbackRequest(feedback=event), metadata=auth)
    assert recorded.feedback_id.startswith("f-")
    with pytest.raises(grpc.RpcError) as empty:
        stub.RecordFeedback(R.RecordFeedbackRequest(), metadata=auth)
    assert empty.value.details().startswith("feedback:")

    # Erasure through both doors.
    forgot = stub.ForgetUser(R.ForgetUserRequest(user_id=user, reason="test"), metadata=auth)
    assert {"postgres", "redis", "milvus", "neo4j"} <= set(forgot.erased_from)
    deleted = httpx.delete(f"{service.http}/users/{user}", headers=headers)
    assert deleted.status_code == 200 and "neo4j" in deleted.json()["erased_from"]
    channel.close()


def test_health_reflection_metrics_and_openapi_need_no_key(service: Running) -> None:
    channel = grpc.insecure_channel(service.grpc_target)
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "mpp.v1.Recommender"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    (reply,) = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in reply.list_services_response.service}
    assert {"mpp.v1.Recommender", "grpc.health.v1.Health"} <= names
    channel.close()

    assert httpx.get(f"{service.http}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.http}/readyz").json()
    assert ready["status"] == "ready" and ready["catalog_loaded"] is True
    assert ready["stores"]["milvus"] == "closed"
    metrics = httpx.get(f"{service.http}/metrics").text
    for family in ("mpp_requests_total", "mpp_cache_requests_total", "mpp_source_calls_total"):
        assert f"# TYPE {family} counter" in metrics
    assert "mpp_recommender_cache_total" not in metrics
    schema = httpx.get(f"{service.http}/openapi.json").json()
    assert {"/recommendations/{user_id}", "/feedback", "/users/{user_id}"} <= set(schema["paths"])
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]


def raw_request(
    http: str, head: bytes, chunks: list[bytes], pause_s: float = 0.0
) -> tuple[float, bytes]:
    """Send ``head`` and then ``chunks`` (pausing between them) on a socket of its own and
    read the answer until the server closes: (seconds from the head to the answer's end, the
    answer). A server that closes while the body is still coming is expected (it refused
    it): the sending stops there."""
    host, port = http.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:
                break
            time.sleep(pause_s)
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
        return time.monotonic() - started, answer


def head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_front_doors_refuse_before_the_body_and_enforce_scopes_rates_and_sizes(
    world: World, service: Running
) -> None:
    # Only digests reach the process.
    env = json.dumps(service_env(world, 1, 2))
    assert all(key not in env for key in (KEY, READ, WRITE, ERASE, SLOW_HTTP))

    # No key, a 74 MB body announced: refused at once, while the body has not started or
    # trickles in (64 KB every 0.2 s would take 4 minutes to arrive).
    huge = "Content-Length: 74000000"
    waited, answer = raw_request(service.http, head("/feedback", huge), [])
    assert answer.startswith(b"HTTP/1.1 401") and waited < 2, (waited, answer[:300])
    assert b"missing API key" in answer and b"connection: close" in answer.lower()
    waited, answer = raw_request(
        service.http, head("/feedback", huge), [b" " * 65536] * 20, pause_s=0.2
    )
    assert answer.startswith(b"HTTP/1.1 401") and waited < 2, (waited, answer[:300])
    # Meanwhile (and after) the service answers others at once.
    assert httpx.get(f"{service.http}/healthz", timeout=2).status_code == 200

    # A key that may write feedback, a body over the 1 MiB limit: by its length at once...
    writer = f"X-API-Key: {WRITE}"
    waited, answer = raw_request(service.http, head("/feedback", writer, huge), [])
    assert answer.startswith(b"HTTP/1.1 413") and waited < 2, (waited, answer[:300])
    assert b"1048576 bytes (MPP_HTTP__MAX_BODY_BYTES)" in answer
    # ... and chunked (no length): cut off once 1 MiB has been read.
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    waited, answer = raw_request(
        service.http, head("/feedback", writer, "Transfer-Encoding: chunked"), [chunk] * 64
    )
    assert answer.startswith(b"HTTP/1.1 413") and waited < 5, (waited, answer[:300])
    problem = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert problem["errors"][0]["field"] == "body"
    assert "1048576 bytes" in problem["errors"][0]["message"]
    # A small chunked body with the right key goes through.
    small = json.dumps({"user_id": world.user("doors"), "campaign_id": "c", "type": "click"})
    body = f"{len(small):x}\r\n{small}\r\n0\r\n\r\n".encode()
    _, answer = raw_request(
        service.http,
        head("/feedback", writer, "Transfer-Encoding: chunked", "Connection: close"),
        [body],
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]

    # Scopes, HTTP: each key does its own thing only; admin does all.
    user = world.user("doors")
    url = f"{service.http}/recommendations/{user}"
    feedback = {"user_id": user, "campaign_id": "book-club", "type": "click"}

    def as_(key: str) -> dict[str, str]:
        return {"X-API-Key": key}

    assert httpx.get(url, headers=as_(READ)).status_code == 200
    forbidden = httpx.post(f"{service.http}/feedback", json=feedback, headers=as_(READ))
    assert forbidden.status_code == 403
    assert "'reader' may not record feedback" in errors(forbidden)["X-API-Key"]
    assert httpx.get(url, headers=as_(WRITE)).status_code == 403
    assert httpx.delete(f"{service.http}/users/{user}", headers=as_(READ)).status_code == 403
    assert httpx.post(f"{service.http}/feedback", json=feedback, headers=as_(WRITE)).is_success
    erased = httpx.delete(f"{service.http}/users/{world.user('doors-gone')}", headers=as_(ERASE))
    assert erased.is_success

    # Scopes, gRPC: the same keys, the same answers.
    channel = grpc.insecure_channel(service.grpc_target)
    stub = RG.RecommenderStub(channel)

    def bearer(key: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"),)

    event = F.FeedbackEvent(user_id=user, campaign_id="book-club", type=F.FEEDBACK_TYPE_CLICK)
    for call, key in (
        (
            lambda md: stub.RecordFeedback(R.RecordFeedbackRequest(feedback=event), metadata=md),
            READ,
        ),
        (lambda md: stub.ForgetUser(R.ForgetUserRequest(user_id=user), metadata=md), WRITE),
        (lambda md: stub.Recommend(R.RecommendRequest(user_id=user), metadata=md), ERASE),
    ):
        with pytest.raises(grpc.RpcError) as denied:
            call(bearer(key))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs the scope" in denied.value.details()
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Recommend(R.RecommendRequest(user_id=user), metadata=(("x-api-key", "nope"),))
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
    by_header = stub.Recommend(R.RecommendRequest(user_id=user), metadata=(("x-api-key", READ),))
    assert by_header.user_id == user
    recorded = stub.RecordFeedback(R.RecordFeedbackRequest(feedback=event), metadata=bearer(WRITE))
    assert recorded.feedback_id

    # Rate limits: a burst of 2, then 429 / RESOURCE_EXHAUSTED with the wait.
    assert [httpx.get(url, headers=as_(SLOW_HTTP)).status_code for _ in range(2)] == [200, 200]
    limited = httpx.get(url, headers=as_(SLOW_HTTP))
    assert limited.status_code == 429 and limited.headers["Retry-After"] in {"1", "2"}
    assert "rate limit" in errors(limited)["X-API-Key"]
    for _ in range(2):
        stub.Recommend(R.RecommendRequest(user_id=user), metadata=bearer(SLOW_GRPC))
    with pytest.raises(grpc.RpcError) as exhausted:
        stub.Recommend(R.RecommendRequest(user_id=user), metadata=bearer(SLOW_GRPC))
    assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(exhausted.value.trailing_metadata())["retry-after"] in {"1", "2"}  # type: ignore[attr-defined]
    # The limit is the key's: the admin key is not slowed.
    assert httpx.get(url, headers=as_(KEY)).status_code == 200

    # gRPC messages over 1 MiB are refused by size, whoever sends them.
    with pytest.raises(grpc.RpcError) as too_big:
        stub.Recommend(R.RecommendRequest(user_id="u" * 2_000_000), metadata=bearer(KEY))
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # Ids whole: a trailing newline is refused (not "erased"), an encoded slash is a 404.
    for path in (f"/users/{user}%0A", f"/users/{user}%0Ax"):
        response = httpx.delete(f"{service.http}{path}", headers=as_(KEY))
        assert response.status_code == 422 and "user_id" in errors(response), path
    for path in (f"/users/{user}%2Fx", f"/users/{user}%2F", f"/recommendations/{user}%2F"):
        method = "GET" if path.startswith("/rec") else "DELETE"
        response = httpx.request(method, f"{service.http}{path}", headers=as_(KEY))
        assert response.status_code == 404, (path, response.status_code)
    with pytest.raises(grpc.RpcError) as newline:
        stub.ForgetUser(R.ForgetUserRequest(user_id=f"{user}\n"), metadata=bearer(KEY))
    assert newline.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()

    metrics = httpx.get(f"{service.http}/metrics").text
    counted = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.value > 0
    }
    for door, reason in (
        ("recommender-http", "unauthenticated"),
        ("recommender-http", "too_large"),
        ("recommender-http", "forbidden"),
        ("recommender-grpc", "rate_limited"),
    ):
        labels = {"service": "recommender", "door": door, "reason": reason}
        assert ("mpp_front_door_refused_total", tuple(sorted(labels.items()))) in counted
    # Every request to the API's methods, refusals included, by door, method and code.
    for api, method, code in (
        ("http", "Recommend", "403"),
        ("http", "Recommend", "429"),
        ("http", "RecordFeedback", "413"),
        ("http", "ForgetUser", "422"),
        ("grpc", "RecordFeedback", "PERMISSION_DENIED"),
        ("grpc", "Recommend", "UNAUTHENTICATED"),
        ("grpc", "Recommend", "RESOURCE_EXHAUSTED"),
        ("grpc", "ForgetUser", "INVALID_ARGUMENT"),
    ):
        labels = {"service": "recommender", "api": api, "method": method, "code": code}
        assert ("mpp_requests_total", tuple(sorted(labels.items()))) in counted, labels
