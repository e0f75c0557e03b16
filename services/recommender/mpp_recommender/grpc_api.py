"""The gRPC front door: mpp.v1.Recommender, grpc.health.v1 and reflection (grpc.aio, on the
same event loop as the HTTP server; blocking work goes to the core's request threads).

Keys (metadata ``authorization: Bearer <key>``, or ``x-api-key: <key>``) and their scopes, as
over HTTP: Recommend needs ``recommendations:read``, RecordFeedback ``feedback:write``,
ForgetUser ``users:erase``; ``admin`` may do all. Messages are bounded both ways
(``grpc.max_receive_message_bytes``, ``grpc.max_send_message_bytes``).

Errors: INVALID_ARGUMENT (the message names the field and the fix), UNAUTHENTICATED (no or
unknown key), PERMISSION_DENIED (the key lacks the scope), RESOURCE_EXHAUSTED (the key's rate
limit, with ``retry-after`` seconds in the trailing metadata; or a message over the size
limit), UNAVAILABLE (feedback or erasure could not be published; retry). Recommend never fails
because a store is down: it degrades (see core.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mpp.auth import Denial, KeyRing, bearer, refused
from mpp.config import Scope, Settings
from mpp.logs import get_logger
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG
from mpp_recommender.checks import InvalidArgument, Unavailable
from mpp_recommender.core import Recommender
from mpp_recommender.telemetry import request_done

log = get_logger(__name__)
T = TypeVar("T")

SERVICE_NAME = R.DESCRIPTOR.services_by_name["Recommender"].full_name


def count_request(method: str, code: grpc.StatusCode, started: float) -> None:
    """``mpp_requests_total`` and ``mpp_request_duration_seconds`` for one gRPC call."""
    request_done("grpc", method, code.name, time.perf_counter() - started)


class Servicer(RG.RecommenderServicer):
    """Async methods on the server's event loop: a cache hit never leaves it."""

    def __init__(self, core: Recommender) -> None:
        self._core = core

    async def _handle(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], call: Awaitable[T]
    ) -> T:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await call
        except InvalidArgument as exc:
            code = grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(exc))
        except Unavailable as exc:
            code = grpc.StatusCode.UNAVAILABLE
            await context.abort(code, str(exc))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL
            log.exception("grpc_request_failed", method=method)
            await context.abort(code, f"internal error: {type(exc).__name__}")
        finally:
            count_request(method, code, started)
        raise AssertionError("abort returned")  # pragma: no cover

    async def Recommend(
        self, request: R.RecommendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> R.RecommendResponse:
        return await self._handle(
            "Recommend",
            context,
            self._core.recommend_async(
                request.user_id, request.limit, request.channel, request.locale
            ),
        )

    async def RecordFeedback(
        self, request: R.RecordFeedbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> R.RecordFeedbackResponse:
        async def run() -> R.RecordFeedbackResponse:
            if not request.HasField("feedback"):
                raise InvalidArgument("feedback", "is required; send a FeedbackEvent")
            feedback_id = await self._core.in_thread(self._core.record_feedback, request.feedback)
            return R.RecordFeedbackResponse(feedback_id=feedback_id)

        return await self._handle("RecordFeedback", context, run())

    async def ForgetUser(
        self, request: R.ForgetUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> R.ForgetUserResponse:
        return await self._handle(
            "ForgetUser",
            context,
            self._core.in_thread(self._core.forget_user, request.user_id, request.reason, "grpc"),
        )


# What each method needs (docs/security.md), and the words for a PERMISSION_DENIED.
METHOD_SCOPES: dict[str, tuple[Scope, str]] = {
    "Recommend": ("recommendations:read", "read recommendations"),
    "RecordFeedback": ("feedback:write", "record feedback"),
    "ForgetUser": ("users:erase", "erase users"),
}
DENIAL_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def metadata_key(metadata: Any) -> str | None:
    """The API key of a call's metadata (authorization: Bearer, else x-api-key)."""
    token = None
    for key, value in metadata or ():
        if key == "authorization":
            token = bearer(value) or token
        elif key == "x-api-key" and token is None:
            token = value.strip() or None
    return token


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks the key, its scope for the method and its rate limit on the Recommender's
    methods, before the handler runs; health and reflection are open (probes carry no
    credentials)."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        self._prefix = f"/{SERVICE_NAME}/"

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        if not self._keys.enabled or not details.method.startswith(self._prefix):
            return await continuation(details)
        started = time.perf_counter()
        method = details.method[len(self._prefix) :]
        scope, action = METHOD_SCOPES.get(method, (None, f"call {method}"))
        decision = self._keys.authorize(metadata_key(details.invocation_metadata), scope, action)
        if not isinstance(decision, Denial):
            return await continuation(details)
        refused("recommender-grpc", decision)
        code = DENIAL_CODES[decision.status]
        trailing = (("retry-after", decision.retry_after),) if decision.status == 429 else ()

        async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            count_request(method, code, started)
            await context.abort(code, decision.message, trailing_metadata=trailing)

        return grpc.unary_unary_rpc_method_handler(deny)


def tracing_interceptor() -> grpc.aio.ServerInterceptor:
    """OpenTelemetry's server interceptor for the Recommender's methods (health checks and
    reflection are not traced): a call's span continues the client's trace when the call's
    metadata carries one (W3C ``traceparent``), and is current while the method runs."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        filter_=filters.service_name(SERVICE_NAME)
    )
    return interceptor


async def build_server(
    settings: Settings,
    core: Recommender,
    keys: KeyRing | None = None,
    tracing: bool = False,
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, int]:
    """The server on the running event loop, bound (not started), and its port; ``keys``
    shared with the HTTP door (one rate limit per key). ``tracing``: calls start spans
    (``mpp.tracing.configure_tracing`` said tracing is on), refusals included.
    ``reuse_port``: several worker processes share the port (else a port in use is an
    error)."""
    cfg = settings.grpc
    interceptors: list[grpc.aio.ServerInterceptor] = [
        AuthInterceptor(keys or KeyRing(settings.auth))
    ]
    if tracing:
        interceptors.insert(0, tracing_interceptor())
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.max_receive_message_length", cfg.max_receive_message_bytes),
            ("grpc.max_send_message_length", cfg.max_send_message_bytes),
        ],
    )
    RG.add_RecommenderServicer_to_server(Servicer(core), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{cfg.host}:{cfg.port}"
    if cfg.tls_cert_file and cfg.tls_key_file:
        credentials = grpc.ssl_server_credentials(
            [(cfg.tls_key_file.read_bytes(), cfg.tls_cert_file.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"gRPC cannot listen on {address}: set MPP_GRPC__PORT to a free port")
    return server, port
