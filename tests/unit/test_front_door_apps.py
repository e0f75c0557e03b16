"""The apps behind the front doors' guard, without a server: the recommender's (HTTP, and gRPC
on a loopback port with its metadata) and analytics', and the report server's refusal to
listen on the network without authentication."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mpp_analytics import web
from mpp_recommender.http_api import create_app

from mpp import analytics
from mpp.config import HttpSettings, Settings

from .front_door_keys import ADMIN, ERASE, KEYS, READ, SLOW, WRITE, auth
from .test_recommender import StubCore


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
