"""The recommender's front doors as a process on the real servers: refusals before the body,
key scopes, rate limits, body and message limits, whole ids, and the refusals counted."""

from __future__ import annotations

import json
import socket
import time

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG

from .process import ERASE, KEY, READ, SLOW_GRPC, SLOW_HTTP, WRITE, Running, errors, service_env
from .world import World


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
