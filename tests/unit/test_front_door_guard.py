"""The front doors' ASGI guard driven by hand, without a server: refusal before the body is
read, the body counted while read, open paths and allowed requests through."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mpp.auth import KeyRing
from mpp.config import AuthSettings
from mpp.http_guard import Guard, Message, Rule

from .front_door_keys import ADMIN, KEYS, READ, WRITE, auth


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
