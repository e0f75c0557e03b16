"""The HTTP front door (FastAPI): the same core as gRPC, JSON in and out.

GET /recommendations/{user_id} needs an API key with the scope ``recommendations:read``, POST
/feedback ``feedback:write``, DELETE /users/{user_id} ``users:erase`` (``admin`` may do all),
sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``, unless authentication is off;
/healthz, /readyz, /metrics and the OpenAPI document (/docs, /openapi.json) need none. The key,
its scope and its rate limit are checked, and the body's size bounded, by ``mpp.http_guard``
before the app reads the body. Errors are ``{"errors": [{"field": ..., "message": ...}]}`` with
422 (bad input), 401 (no or unknown key), 403 (scope), 413 (body too large), 429 (rate limit,
with Retry-After), or 503 (feedback or erasure not published; retry).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, MutableMapping
from datetime import UTC
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AwareDatetime, BaseModel, Field

from mpp.auth import KeyRing
from mpp.codecs import checked_utc
from mpp.config import Settings
from mpp.http_guard import ASGIApp, Guard, Receive, Rule, Send
from mpp.logs import get_logger
from mpp.observability import exposition
from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R
from mpp_recommender.checks import InvalidArgument, Unavailable
from mpp_recommender.core import Recommender
from mpp_recommender.telemetry import request_done

log = get_logger(__name__)

KINDS = {
    "impression": F.FEEDBACK_TYPE_IMPRESSION,
    "click": F.FEEDBACK_TYPE_CLICK,
    "conversion": F.FEEDBACK_TYPE_CONVERSION,
    "dismissal": F.FEEDBACK_TYPE_DISMISSAL,
}


class Feedback(BaseModel):
    """One feedback event (mpp.v1.FeedbackEvent)."""

    model_config = {"extra": "forbid"}

    user_id: Annotated[str, Field(min_length=1, max_length=128)]
    campaign_id: Annotated[str, Field(min_length=1, max_length=128)]
    type: Literal["impression", "click", "conversion", "dismissal"]
    # RFC 3339 with a time zone; default: now.
    timestamp: AwareDatetime | None = None
    feedback_id: Annotated[str, Field(max_length=128)] = ""
    recommendation_id: Annotated[str, Field(max_length=128)] = ""
    channel: Annotated[str, Field(max_length=64)] = ""
    metadata: dict[str, str] = {}


def answer_json(answer: R.RecommendResponse) -> dict[str, Any]:
    """The JSON shape of a RecommendResponse (written out by hand: 5-10x faster than
    json_format, and a cache hit is little else)."""
    return {
        "user_id": answer.user_id,
        "recommendation_id": answer.recommendation_id,
        "strategy": answer.strategy,
        "cached": answer.cached,
        "degraded_sources": list(answer.degraded_sources),
        "generated_at": answer.generated_at.ToDatetime(tzinfo=UTC).isoformat(),
        "items": [
            {
                "campaign_id": item.campaign_id,
                "name": item.name,
                "score": item.score,
                "reasons": [
                    {
                        "source": r.source,
                        "kind": r.kind,
                        "detail": r.detail,
                        "score": r.score,
                        "intent": r.intent,
                        "message_id": r.message_id,
                    }
                    for r in item.reasons
                ],
            }
            for item in answer.items
        ],
    }


# Both header forms, for the OpenAPI document only: the Guard checks them, before the body.
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)
BEARER = HTTPBearer(auto_error=False)
Documented = [Security(API_KEY), Security(BEARER)]

# What each route needs (docs/security.md); any other path needs a valid key, then 404s.
RULES = (
    Rule("GET", "/recommendations/", "recommendations:read", "read recommendations"),
    Rule("POST", "/feedback", "feedback:write", "record feedback"),
    Rule("DELETE", "/users/", "users:erase", "erase users"),
)


# The API's routes by the method names gRPC gives them (mpp_requests_total's ``method``), and
# the path template a span shows instead of the path (which holds a user id).
METHODS = (
    ("GET", "/recommendations/", "Recommend", "/recommendations/{user_id}"),
    ("POST", "/feedback", "RecordFeedback", "/feedback"),
    ("DELETE", "/users/", "ForgetUser", "/users/{user_id}"),
)
# Not traced (unless OTEL_PYTHON_FASTAPI_EXCLUDED_URLS says otherwise): probes and scrapes.
UNTRACED = "/healthz$,/readyz$,/metrics$"


def route_of(method: str, path: str) -> tuple[str, str] | None:
    """The API method a request calls and its path template, None for other paths."""
    for verb, prefix, name, template in METHODS:
        if verb == method and (path.startswith(prefix) if prefix.endswith("/") else path == prefix):
            return name, template
    return None


class RequestMetrics:
    """``mpp_requests_total`` (by status code) and ``mpp_request_duration_seconds`` for the
    API's methods; a pure ASGI middleware outside the Guard, so that refusals count too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        route = route_of(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            request_done("http", route[0], str(status), time.perf_counter() - started)


def _hide_user_ids(span: Any, scope: dict[str, Any]) -> None:
    """The request span's URL attributes name the path template, not the user's id."""
    if not span.is_recording():
        return
    route = route_of(scope.get("method", ""), scope.get("path", ""))
    if route is None:
        return
    template = route[1]
    query = scope.get("query_string", b"").decode("latin-1")
    target = f"{template}?{query}" if query else template
    attributes = getattr(span, "attributes", None) or {}
    for key, value in (("url.path", template), ("http.target", target)):
        if key in attributes:
            span.set_attribute(key, value)
    url = attributes.get("http.url") or attributes.get("url.full")
    if url:
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1")
        head = str(url).split(path, 1)[0] if path in str(url) else ""
        span.set_attribute("http.url" if "http.url" in attributes else "url.full", head + target)


def instrument(app: FastAPI) -> None:
    """OpenTelemetry's FastAPI instrumentation: each request starts a span (continuing the
    caller's trace when its headers carry one), the probes and /metrics excepted; no
    receive/send spans, and no user id in the span's attributes."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", UNTRACED),
        exclude_spans=["receive", "send"],
        server_request_hook=_hide_user_ids,
    )


def _errors(status: int, errors: list[dict[str, str]]) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=status)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def create_app(
    settings: Settings,
    core: Recommender,
    readiness: Callable[[], dict[str, Any]],
    keys: KeyRing | None = None,
    tracing: bool = False,
) -> FastAPI:
    """The app behind its Guard; ``keys`` shared with the gRPC door (one rate limit per key).
    ``tracing``: requests start spans (``mpp.tracing.configure_tracing`` said it is on)."""
    default_limit = settings.recommender.default_limit
    app = FastAPI(
        title="mpp recommender",
        version="1",
        description="Campaigns for a user, with the reasons why; feedback; erasure.",
        # /users/u1%2F is /users/u1/ once decoded: a 404, not a redirect to /users/u1.
        redirect_slashes=False,
    )
    app.add_middleware(
        Guard,
        keys=keys or KeyRing(settings.auth),
        max_body_bytes=settings.http.max_body_bytes,
        rules=RULES,
        challenge="Bearer",
        door="recommender-http",
    )
    # Added last, so outermost: it sees the Guard's refusals.
    app.add_middleware(RequestMetrics)
    if tracing:
        instrument(app)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            field = _field(tuple(err.get("loc", ())))
            message = str(err.get("msg", "invalid"))
            if "input" in err and err.get("type") != "missing":
                message += f" (got {json.dumps(err['input'], default=str)[:80]})"
            errors.append({"field": field, "message": message})
        return _errors(422, errors)

    @app.exception_handler(InvalidArgument)
    def _invalid_argument(request: Request, exc: InvalidArgument) -> JSONResponse:
        return _errors(422, [{"field": exc.field, "message": exc.message}])

    @app.exception_handler(Exception)
    def _failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("http_request_failed", path=request.url.path)
        return _errors(500, [{"field": "", "message": f"internal error: {type(exc).__name__}"}])

    @app.exception_handler(Unavailable)
    def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return _errors(503, [{"field": "", "message": str(exc)}])

    @app.get("/recommendations/{user_id}", dependencies=Documented)
    async def recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=128)],
        limit: Annotated[int, Query(ge=0, le=100, description="0: the default")] = 0,
        channel: Annotated[str, Query(max_length=64)] = "",
        locale: Annotated[str, Query(max_length=64)] = "",
    ) -> Response:
        """The campaigns for the user, best first, each with its reasons (same answer as the
        gRPC Recommend)."""
        answer = await core.recommend_async(user_id, limit or default_limit, channel, locale)
        body = json.dumps(answer_json(answer), separators=(",", ":")).encode()
        return Response(body, media_type="application/json")

    @app.post("/feedback", dependencies=Documented)
    def feedback(body: Feedback) -> dict[str, str]:
        """Record an impression, click, conversion or dismissal (published to the feedback
        topic; conversions and dismissals exclude the campaign for the user at once)."""
        event = F.FeedbackEvent(
            feedback_id=body.feedback_id,
            user_id=body.user_id,
            campaign_id=body.campaign_id,
            type=KINDS[body.type],
            recommendation_id=body.recommendation_id,
            channel=body.channel,
            metadata=body.metadata,
        )
        if body.timestamp is not None:
            try:
                event.timestamp.FromDatetime(checked_utc(body.timestamp))
            except ValueError as exc:
                raise InvalidArgument("timestamp", str(exc)) from exc
        return {"feedback_id": core.record_feedback(event)}

    @app.delete("/users/{user_id}", dependencies=Documented)
    def forget(
        user_id: Annotated[str, Path(min_length=1, max_length=128)],
        reason: Annotated[str, Query(max_length=1000)] = "",
    ) -> dict[str, Any]:
        """Forget the user in every store and publish the erasure."""
        result = core.forget_user(user_id, reason, "http")
        return {
            "request_id": result.request_id,
            "erased_from": list(result.erased_from),
            "pending": list(result.pending),
        }

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        state = readiness()
        return JSONResponse(state, status_code=200 if state["status"] == "ready" else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return app
