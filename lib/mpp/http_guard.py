"""The lock on an HTTP door: a pure ASGI middleware in front of a FastAPI app.

In this order, for every request but the open paths (health, metrics, the OpenAPI document):

1. the API key, its scope and its rate limit, from the headers alone, before the app reads a
   byte of the body: 401, 403 or 429 (with ``Retry-After``);
2. the body size: a ``Content-Length`` over the limit is refused at once (413), and the body
   is counted while the app reads it, so that a body without one (chunked) or with a false
   one is cut off at the limit too.

A refusal of a request that carries a body closes the connection (``Connection: close``), so
the rest of the body is never read. Errors have the services' shape,
``{"errors": [{"field": ..., "message": ...}]}``, and name the fix.

A key is taken from ``X-API-Key: <key>``, ``Authorization: Bearer <key>`` or ``Authorization:
Basic`` with the key as the password (what a browser sends after asking for it).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from mpp.auth import Denial, KeyRing, bearer, refused
from mpp.config import Scope

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)


@dataclass(frozen=True)
class Rule:
    """Requests with ``method`` ("*": any) whose path is ``path`` or, when it ends with "/",
    starts with it need ``scope`` (None: any valid key) to ``action`` (words for errors)."""

    method: str
    path: str
    scope: Scope | None
    action: str

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method):
            return False
        return path.startswith(self.path) if self.path.endswith("/") else path == self.path


class BodyTooLarge(Exception):
    """Raised into the app by ``receive`` when the body passes the limit."""


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The API key of the request's headers (X-API-Key, then Authorization), else None."""
    authorization = None
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip() or None
        if name == b"authorization":
            authorization = value.decode("latin-1")
    if authorization is None:
        return None
    if authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return bearer(authorization)


def _header(headers: Iterable[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name == wanted:
            return value
    return None


class Guard:
    """Authentication, scopes, rate limits and the body limit around ``app``.

    ``rules`` are tried in order; a request that none matches needs ``default``'s scope.
    ``challenge`` is the ``WWW-Authenticate`` of a 401 (``Basic realm=...`` makes a browser
    ask for the key).
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        max_body_bytes: int,
        rules: Sequence[Rule] = (),
        default: Rule = Rule("*", "/", None, "call this API"),
        challenge: str = "Bearer",
        door: str = "http",
        open_paths: frozenset[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.rules = tuple(rules)
        self.default = default
        self.challenge = challenge
        self.door = door
        self.open_paths = open_paths

    def rule(self, method: str, path: str) -> Rule:
        for rule in self.rules:
            if rule.matches(method, path):
                return rule
        return self.default

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        has_body = _header(headers, b"transfer-encoding") is not None
        length_header = _header(headers, b"content-length")
        length: int | None = None
        if length_header is not None and length_header.strip().isdigit():
            length = int(length_header)
            has_body = has_body or length > 0
        path: str = scope["path"]
        if path not in self.open_paths:
            rule = self.rule(scope["method"], path)
            decision = self.keys.authorize(presented_key(headers), rule.scope, rule.action)
            if isinstance(decision, Denial):
                await self.refuse(send, decision, has_body)
                return
            scope.setdefault("state", {})["api_key"] = decision.name
        if length is not None and length > self.max_body_bytes:
            await self.refuse(send, self.too_large(), has_body)
            return
        await self._limited(scope, receive, send, has_body)

    def too_large(self) -> Denial:
        return Denial(
            413,
            f"the request body is larger than the limit of {self.max_body_bytes} bytes "
            "(MPP_HTTP__MAX_BODY_BYTES): send a smaller body",
        )

    async def _limited(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Send, has_body: bool
    ) -> None:
        received = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal received, over
            if over:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to the exception; the 413 below replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            # The app may have wrapped BodyTooLarge into an error of its own; only that
            # exception is ours to answer.
            if not over:
                raise
        if over and not started:
            await self.refuse(send, self.too_large(), has_body)

    async def refuse(self, send: Send, denial: Denial, close: bool) -> None:
        refused(self.door, denial)
        field = "body" if denial.status == 413 else "X-API-Key"
        body = json.dumps({"errors": [{"field": field, "message": denial.message}]}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if denial.status == 401:
            headers.append((b"www-authenticate", self.challenge.encode()))
        if denial.status == 429:
            headers.append((b"retry-after", denial.retry_after.encode()))
        if close:
            # The body's remainder is never read: the connection cannot carry another request.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": denial.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
