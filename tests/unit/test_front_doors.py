"""The front doors' lock without a server: keys kept as SHA-256, scopes, the token bucket, the
ASGI guard (refusal before the body is read, the body counted while read), both apps behind
it (the recommender's and analytics'), and the gRPC metadata."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mpp_analytics import web
from mpp_recommender.grpc_api import metadata_key
from mpp_recommender.http_api import create_app
from pydantic import ValidationError
from typer.testing import CliRunner

from mpp import analytics
from mpp.auth import (
    ANONYMOUS,
    BAD_KEY,
    MISSING_KEYS,
    NO_KEY,
    Caller,
    Denial,
    KeyRing,
    TokenBucket,
    bearer,
    key_digest,
    key_entry,
    new_key,
)
from mpp.config import AuthSettings, HttpSettings, Settings
from mpp.http_guard import Guard, Message, Rule, presented_key

from .test_recommender import StubCore

READ, WRITE, ERASE, ADMIN, SLOW = "k-read", "k-write", "k-erase", "k-admin", "k-slow"


def auth(*entries: dict[str, Any], enabled: bool = True) -> AuthSettings:
    return AuthSettings.model_validate({"enabled": enabled, "keys": list(entries)})


KEYS = auth(
    key_entry("reader", READ, ["recommendations:read", "analytics:read"]),
    key_entry("writer", WRITE, ["feedback:write"]),
    key_entry("eraser", ERASE, ["users:erase"]),
    key_entry("ops", ADMIN, ["admin"]),
    key_entry("slow", SLOW, ["recommendations:read"], rate_per_s=1, burst=2),
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- keys, scopes, buckets ------------------------------------------------------------------


def test_new_keys_are_random_and_only_their_sha256_is_configured() -> None:
    key = new_key()
    assert key.startswith("mpp_") and len(key) > 40 and new_key() != key
    entry = key_entry("ops", key, ["admin"])
    assert entry == {"name": "ops", "sha256": key_digest(key), "scopes": ["admin"]}
    assert key not in json.dumps(entry) and len(entry["sha256"]) == 64
    with_rate = key_entry("ops", key, ["admin"], rate_per_s=5, burst=7)
    assert (with_rate["rate_per_s"], with_rate["burst"]) == (5, 7)
    for bad in (
        {"name": "ops", "sha256": "xyz", "scopes": ["admin"]},
        {"name": "ops", "sha256": key_digest(key), "scopes": ["root"]},
        {"name": "ops", "sha256": key_digest(key), "scopes": []},
        {"name": "with space", "sha256": key_digest(key), "scopes": ["admin"]},
    ):
        with pytest.raises(ValidationError):
            auth(bad)
    with pytest.raises(ValidationError, match="appear twice"):
        auth(entry, key_entry("ops", "other", ["admin"]))


def test_settings_read_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = key_entry("ci", "the-key", ["feedback:write"])
    monkeypatch.setenv("MPP_AUTH__KEYS", json.dumps([entry]))
    monkeypatch.setenv("MPP_HTTP__MAX_BODY_BYTES", "4096")
    settings = Settings()
    assert settings.auth.enabled is True
    assert settings.auth.keys[0].name == "ci" and settings.auth.keys[0].rate_per_s == 100
    assert settings.http.max_body_bytes == 4096
    assert not hasattr(settings.recommender, "api_keys")


def test_keys_scopes_and_admin() -> None:
    keys = KeyRing(KEYS)
    assert keys.authorize(READ, "recommendations:read", "x") == Caller(
        "reader", frozenset({"recommendations:read", "analytics:read"})
    )
    assert keys.authorize(None, "recommendations:read", "x") == Denial(401, NO_KEY)
    assert keys.authorize("", None, "x") == Denial(401, NO_KEY)
    assert keys.authorize("k-reaD", None, "x") == Denial(401, BAD_KEY)
    # The digest of a key is not the key.
    assert keys.authorize(key_digest(READ), None, "x") == Denial(401, BAD_KEY)
    denied = keys.authorize(READ, "users:erase", "erase users")
    assert isinstance(denied, Denial) and denied.status == 403
    assert "'reader' may not erase users" in denied.message and "users:erase" in denied.message
    for scope in ("recommendations:read", "feedback:write", "users:erase", "analytics:read"):
        assert isinstance(keys.authorize(ADMIN, scope, "x"), Caller)  # type: ignore[arg-type]
    assert isinstance(keys.authorize(WRITE, None, "x"), Caller)  # any valid key
    assert KeyRing(auth()).authorize(ADMIN, None, "x") == Denial(401, MISSING_KEYS)
    # Authentication off: anyone, with every scope, and no rate limit.
    off = KeyRing(auth(enabled=False))
    assert off.authorize(None, "admin", "x") == ANONYMOUS


def test_token_bucket_allows_bursts_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token in 1/2 s
    assert bucket.take(0.25) == pytest.approx(0.25)  # a refused request takes nothing
    assert bucket.take(0.5) == 0.0
    # A long pause refills to the burst, not beyond.
    assert [bucket.take(100.0) for _ in range(4)][-1] == pytest.approx(0.5)
    # A clock that steps back gives nothing.
    assert bucket.take(50.0) > 0


def test_rate_limit_per_key_with_retry_after() -> None:
    clock = Clock()
    keys = KeyRing(KEYS, clock=clock)
    assert all(isinstance(keys.authorize(SLOW, None, "x"), Caller) for _ in range(2))
    limited = keys.authorize(SLOW, None, "x")
    assert isinstance(limited, Denial) and limited.status == 429
    assert limited.retry_after_s == pytest.approx(1.0) and limited.retry_after == "1"
    assert "'slow' is over its rate limit (1 requests/s, bursts of 2" in limited.message
    # Other keys have buckets of their own.
    assert isinstance(keys.authorize(READ, None, "x"), Caller)
    # A refused scope takes no token: the key is not slowed by its mistakes.
    clock.now += 1.0
    assert keys.authorize(SLOW, "users:erase", "x").status == 403  # type: ignore[union-attr]
    assert isinstance(keys.authorize(SLOW, None, "x"), Caller)
    assert Denial(429, "", 0.01).retry_after == "1" and Denial(429, "", 2.1).retry_after == "3"


def test_keys_from_headers_and_metadata() -> None:
    basic = base64.b64encode(b"anyone:" + READ.encode())
    assert presented_key([(b"x-api-key", READ.encode())]) == READ
    assert presented_key([(b"authorization", b"Bearer " + READ.encode())]) == READ
    assert presented_key([(b"authorization", b"Basic " + basic)]) == READ
    assert presented_key([(b"authorization", b"Basic %%%")]) is None
    assert presented_key([(b"authorization", b"Digest x")]) is None
    assert presented_key([(b"host", b"x")]) is None
    assert bearer("bearer abc ") == "abc" and bearer("Bearer ") is None and bearer(None) is None
    assert metadata_key((("authorization", f"Bearer {READ}"),)) == READ
    assert metadata_key((("x-api-key", READ),)) == READ
    assert metadata_key((("authorization", "Basic x"),)) is None and metadata_key(None) is None


# -- the ASGI guard, driven by hand ---------------------------------------------------------


class Exchange:
    """One request through ``Guard`` around an app that reads the whole body, as FastAPI
    does, and turns a failed read into an error of its own (FastAPI answers 400)."""

    def __init__(self, chunks: list[bytes], headers: dict[str, str], path: str = "/feedback"):
        self.chunks = list(chunks)
        self.pulled = 0
        self.sent: list[Message] = []
        self.app_saw: bytes | None = None
        self.scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }

    async def receive(self) -> Message:
        self.pulled += 1
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        try:
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        except Exception as exc:
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"parse error"})
            raise RuntimeError("wrapped") from exc
        self.app_saw = body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def run(self, limit: int = 1000, keys: AuthSettings = KEYS) -> tuple[int, dict[str, str]]:
        guard = Guard(
            self.app,
            KeyRing(keys),
            max_body_bytes=limit,
            rules=(Rule("POST", "/feedback", "feedback:write", "record feedback"),),
        )
        asyncio.run(guard(self.scope, self.receive, self.send))
        start, body = self.sent[0], self.sent[1]
        assert start["type"] == "http.response.start" and len(self.sent) == 2
        self.body = body["body"]
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], headers

    def message(self) -> str:
        errors = json.loads(self.body)["errors"]
        assert len(errors) == 1
        return str(errors[0]["message"])


def test_guard_refuses_before_reading_any_of_the_body() -> None:
    for headers, status in (
        ({"content-length": "74000000"}, 401),
        ({"content-length": "74000000", "x-api-key": "wrong"}, 401),
        ({"transfer-encoding": "chunked", "x-api-key": READ}, 403),
    ):
        exchange = Exchange([b"x" * 100] * 3, headers)
        got, response_headers = exchange.run()
        assert got == status and exchange.pulled == 0 and exchange.app_saw is None
        # The body's rest is never read: the connection is not reused.
        assert response_headers["connection"] == "close"
        assert response_headers["content-type"] == "application/json"
    assert "www-authenticate" in Exchange([b""], {}).run()[1]
    # No body declared: the connection stays open.
    status, headers = Exchange([b""], {"x-api-key": "wrong"}).run()
    assert status == 401 and "connection" not in headers


def test_guard_refuses_a_content_length_over_the_limit_at_once() -> None:
    exchange = Exchange([b"x" * 100], {"content-length": "1001", "x-api-key": WRITE})
    status, headers = exchange.run(limit=1000)
    assert status == 413 and exchange.pulled == 0 and headers["connection"] == "close"
    assert "limit of 1000 bytes (MPP_HTTP__MAX_BODY_BYTES)" in exchange.message()


def test_guard_counts_a_body_without_length_and_stops_reading_at_the_limit() -> None:
    chunks = [b"x" * 300] * 10  # 3,000 bytes, chunked
    exchange = Exchange(chunks, {"transfer-encoding": "chunked", "x-api-key": WRITE})
    status, headers = exchange.run(limit=1000)
    # The 4th chunk passes 1,000 bytes: nothing after it is read, and the app's own answer
    # to the failed read (400) is replaced by the 413.
    assert status == 413 and exchange.pulled == 4 and exchange.app_saw is None
    assert headers["connection"] == "close" and "1000 bytes" in exchange.message()
    # A Content-Length that lies (smaller than the body) is cut off the same way.
    liar = Exchange(chunks, {"content-length": "10", "x-api-key": WRITE})
    assert liar.run(limit=1000)[0] == 413 and liar.pulled == 4


def test_guard_lets_allowed_requests_and_open_paths_through() -> None:
    exchange = Exchange([b"x" * 600, b"x" * 400], {"x-api-key": ADMIN})
    assert exchange.run(limit=1000)[0] == 200 and exchange.app_saw == b"x" * 1000
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        open_door = Exchange([b""], {}, path=path)
        assert open_door.run()[0] == 200, path
    # With authentication off the body limit still holds.
    off = Exchange([b"x" * 2000], {"transfer-encoding": "chunked"})
    assert off.run(limit=1000, keys=auth(enabled=False))[0] == 413


# -- the two apps behind it -----------------------------------------------------------------


@pytest.fixture
def recommender() -> Iterator[tuple[TestClient, StubCore]]:
    core = StubCore()
    settings = Settings(auth=KEYS, http=HttpSettings(max_body_bytes=2048))
    app = create_app(settings, core, lambda: {"status": "ready"})  # type: ignore[arg-type]
    with TestClient(app) as client:
        yield client, core


def errors(response: Any) -> dict[str, str]:
    return {e["field"]: e["message"] for e in response.json()["errors"]}


def test_recommender_http_scopes_rate_limits_and_body_limit(
    recommender: tuple[TestClient, StubCore],
) -> None:
    client, core = recommender
    feedback = {"user_id": "u1", "campaign_id": "c1", "type": "click"}

    def h(key: str) -> dict[str, str]:
        return {"X-API-Key": key}

    assert client.get("/recommendations/u1").status_code == 401
    assert client.get("/recommendations/u1").headers["www-authenticate"] == "Bearer"
    assert client.get("/recommendations/u1", headers=h(READ)).status_code == 200
    bearer_form = {"Authorization": f"Bearer {READ}"}
    assert client.get("/recommendations/u1", headers=bearer_form).status_code == 200
    forbidden = client.post("/feedback", json=feedback, headers=h(READ))
    assert forbidden.status_code == 403 and "feedback:write" in errors(forbidden)["X-API-Key"]
    assert client.post("/feedback", json=feedback, headers=h(WRITE)).status_code == 200
    assert client.delete("/users/u1", headers=h(WRITE)).status_code == 403
    assert client.delete("/users/u1", headers=h(ERASE)).status_code == 200
    assert client.get("/recommendations/u1", headers=h(ERASE)).status_code == 403
    for call in (
        lambda: client.get("/recommendations/u1", headers=h(ADMIN)),
        lambda: client.post("/feedback", json=feedback, headers=h(ADMIN)),
        lambda: client.delete("/users/u1", headers=h(ADMIN)),
    ):
        assert call().status_code == 200
    # An unknown path still needs a key, then 404s.
    assert client.get("/nothing").status_code == 401
    assert client.get("/nothing", headers=h(READ)).status_code == 404
    # The rate limit: a burst of 2, then 429 with Retry-After.
    assert [client.get("/recommendations/u1", headers=h(SLOW)).status_code for _ in range(2)] == [
        200,
        200,
    ]
    limited = client.get("/recommendations/u1", headers=h(SLOW))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert "rate limit" in errors(limited)["X-API-Key"]
    # Bodies over 2,048 bytes: with a length, and chunked (a generator has none).
    big = {**feedback, "metadata": {"x": "y" * 3000}}
    too_big = client.post("/feedback", json=big, headers=h(WRITE))
    assert too_big.status_code == 413 and "2048 bytes" in errors(too_big)["body"]
    chunked = client.post("/feedback", content=iter([b"{" + b" " * 1000] * 4), headers=h(WRITE))
    assert chunked.status_code == 413 and "2048 bytes" in errors(chunked)["body"]
    # Ids whole, with authentication on: a newline is a 422, an encoded slash a 404 (no
    # redirect to the id without it).
    for path in ("/users/u1%0A", "/users/u1%0Ax"):
        response = client.delete(path, headers=h(ADMIN))
        assert response.status_code == 422 and "user_id" in errors(response)
    for path in ("/users/u1%2Fx", "/users/u1%2F", "/users/u1/"):
        response = client.delete(path, headers=h(ADMIN), follow_redirects=False)
        assert response.status_code == 404, path
    assert (
        client.get("/recommendations/u1%2F", headers=h(ADMIN), follow_redirects=False).status_code
        == 404
    )
    # Health, metrics and the document need no key.
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200
    assert "mpp_front_door_refused_total" in client.get("/metrics").text
    assert core.asked.count("u1") >= 7


def test_analytics_reports_need_a_read_key_and_the_sync_admin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(analytics, "user_engagement", lambda conn, user_id: None)
    app = web.create_app(Settings(auth=KEYS))
    app.dependency_overrides[web.connection] = lambda: object()
    client = TestClient(app)
    refused = client.get("/api/users/u1")
    # A browser asks for the key: Basic, the key as the password.
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Basic realm="mpp analytics"')
    basic = "Basic " + base64.b64encode(f"me:{READ}".encode()).decode()
    assert client.get("/api/users/u1", headers={"Authorization": basic}).status_code == 404
    assert client.get("/", headers={"X-API-Key": WRITE}).status_code == 403
    assert client.post("/api/warehouse/sync", headers={"X-API-Key": READ}).status_code == 403
    # Admin may: this app has no syncer, so the sync itself answers 501.
    assert client.post("/api/warehouse/sync", headers={"X-API-Key": ADMIN}).status_code == 501
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/api/users/u1%2F", headers={"X-API-Key": READ}).status_code == 404


def test_report_server_refuses_the_network_without_authentication() -> None:
    settings = Settings(auth=auth(enabled=False))
    settings.analytics.report_host = "0.0.0.0"
    with pytest.raises(RuntimeError, match="MPP_AUTH__ENABLED=true"):
        web.ReportServer(settings).start()
    production = Settings.model_construct(**{**dict(Settings()), "environment": "production"})
    with pytest.raises(RuntimeError, match="no API key is configured"):
        web.ReportServer(production).start()


def test_keys_new_prints_the_key_once_and_its_entry() -> None:
    from mpp.cli import app

    result = CliRunner().invoke(
        app, ["keys", "new", "--name", "ops", "--scopes", "admin", "--json"]
    )
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["entry"] == {"name": "ops", "sha256": key_digest(made["key"]), "scopes": ["admin"]}
    assert KeyRing(auth(made["entry"])).authorize(made["key"], "users:erase", "x") == Caller(
        "ops", frozenset({"admin"})
    )
    text = CliRunner().invoke(
        app, ["keys", "new", "--name", "app", "--scopes", "recommendations:read,feedback:write"]
    )
    assert text.exit_code == 0 and "MPP_AUTH__KEYS" in text.output
    entry = json.loads(text.output.strip().splitlines()[-1])
    assert entry["scopes"] == ["recommendations:read", "feedback:write"]
    bad = CliRunner().invoke(app, ["keys", "new", "--name", "x", "--scopes", "root"])
    assert bad.exit_code == 2


class AsyncStubCore(StubCore):
    async def in_thread(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


def test_grpc_door_scopes_rate_limits_and_message_size() -> None:
    """The gRPC server in this process (loopback, any port) around the stub core."""
    import grpc
    from mpp_recommender.grpc_api import build_server

    from mpp.config import GrpcSettings
    from mpp.v1 import recommender_pb2 as R
    from mpp.v1 import recommender_pb2_grpc as RG

    async def run() -> list[tuple[str, str, dict[str, str]]]:
        settings = Settings(auth=KEYS, grpc=GrpcSettings(port=0))
        server, port = await build_server(settings, AsyncStubCore())  # type: ignore[arg-type]
        await server.start()
        outcomes: list[tuple[str, str, dict[str, str]]] = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = RG.RecommenderStub(channel)
                calls = [
                    (stub.Recommend, R.RecommendRequest(user_id="u1"), ()),
                    (stub.Recommend, R.RecommendRequest(user_id="u1"), (("x-api-key", "no"),)),
                    (stub.Recommend, R.RecommendRequest(user_id="u1"), (("x-api-key", WRITE),)),
                    (stub.ForgetUser, R.ForgetUserRequest(user_id="u1"), (("x-api-key", READ),)),
                    (stub.ForgetUser, R.ForgetUserRequest(user_id="u1\n"), (("x-api-key", ADMIN),)),
                    (
                        stub.Recommend,
                        R.RecommendRequest(user_id="u" * 2_000_000),
                        (("x-api-key", ADMIN),),
                    ),
                    *[
                        (
                            stub.Recommend,
                            R.RecommendRequest(user_id="u1"),
                            (("authorization", f"Bearer {SLOW}"),),
                        )
                    ]
                    * 3,
                ]
                for call, request, metadata in calls:
                    try:
                        await call(request, metadata=metadata)
                        outcomes.append(("OK", "", {}))
                    except grpc.aio.AioRpcError as exc:
                        trailing = {k: str(v) for k, v in exc.trailing_metadata() or ()}
                        outcomes.append((exc.code().name, exc.details() or "", trailing))
        finally:
            await server.stop(0)
        return outcomes

    outcomes = asyncio.run(run())
    assert [code for code, _, _ in outcomes] == [
        "UNAUTHENTICATED",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "PERMISSION_DENIED",
        "INVALID_ARGUMENT",  # a trailing newline is not part of an id
        "RESOURCE_EXHAUSTED",  # 2 MB over the 1 MiB receive limit
        "OK",
        "OK",
        "RESOURCE_EXHAUSTED",  # the slow key's third call
    ]
    assert "may not erase users" in outcomes[3][1] and "users:erase" in outcomes[3][1]
    assert "larger than max" in outcomes[5][1]
    assert "rate limit" in outcomes[8][1] and outcomes[8][2]["retry-after"] == "1"
