"""The recommender process: the gRPC server (thread pool) and the HTTP API (uvicorn) in one
process around one core, plus the activity follower thread.

HTTP listens on ``recommender.http_host:http_port`` (18086); ``MPP_HTTP__PORT``, which the
process manager (``mpp services``, ``mpp.pipeline``) sets for every service, takes precedence so
that its /readyz probe finds the service. gRPC listens on ``grpc.host:grpc.port`` (50051).
SIGTERM/SIGINT stop both servers (in-flight requests finish, 5 s at most) and the follower.
"""

from __future__ import annotations

import signal
from typing import Any

import uvicorn
import uvloop

from mpp.auth import MISSING_KEYS, KeyRing
from mpp.config import Settings
from mpp.logs import configure_logging, get_logger
from mpp.observability import set_service
from mpp.tracing import configure_tracing, shutdown_tracing
from mpp_recommender.activity import ActivityFollower
from mpp_recommender.core import Recommender
from mpp_recommender.grpc_api import build_server
from mpp_recommender.http_api import create_app

SERVICE = "recommender"


def http_port(settings: Settings) -> int:
    return settings.http.port or settings.recommender.http_port


async def serve(
    settings: Settings,
    core: Recommender,
    follower: ActivityFollower | None,
    tracing: bool = False,
) -> None:
    """Both servers on one event loop until SIGTERM/SIGINT; ``tracing``: both doors start a
    span per request."""
    log = get_logger(SERVICE)
    cfg = settings.recommender
    # One key ring for both doors: a key's rate limit counts its requests through either.
    keys = KeyRing(settings.auth)
    server, grpc_port = await build_server(settings, core, keys, tracing=tracing)
    await server.start()

    def readiness() -> dict[str, Any]:
        reasons = []
        if follower is not None and follower.problem is not None:
            reasons.append(follower.problem)
        return {
            "status": "not_ready" if reasons else "ready",
            "reasons": reasons,
            # Informational: the service answers (degraded) whatever these say.
            "stores": core.store_states(),
            "catalog_loaded": core.postgres.catalog_loaded,
        }

    port = http_port(settings)
    config = uvicorn.Config(
        create_app(settings, core, readiness, keys, tracing=tracing),
        host=cfg.http_host if settings.http.port == 0 else settings.http.host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # Longer than a load balancer's usual 60 s idle timeout, so that the balancer, not
        # the service, closes idle keep-alive connections (no request lost in between).
        timeout_keep_alive=75,
    )
    log.info("service_started", http_port=port, grpc_port=grpc_port, tracing=tracing)
    # uvicorn handles SIGTERM/SIGINT while it serves, then restores the previous handlers and
    # raises the signal again: with these no-op handlers in place, the process goes on to stop
    # gRPC, the follower and the stores' clients instead of dying on the spot.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        await uvicorn.Server(config).serve()
    finally:
        await server.stop(5)


def run(settings: Settings) -> int:
    configure_logging(settings, SERVICE)
    # The shared store clients' series (Milvus, Neo4j, PostgreSQL) say service="recommender".
    set_service(SERVICE)
    # Off unless the OTEL_* variables turn it on (mpp.tracing).
    tracing = configure_tracing(SERVICE)
    log = get_logger(SERVICE)
    cfg = settings.recommender
    if settings.auth.enabled and not settings.auth.keys:
        if settings.environment == "production":
            log.error("refusing_to_start", reason=MISSING_KEYS)
            return 2
        log.warning("no_api_keys", detail=MISSING_KEYS)
    core = Recommender(settings)
    core.start()
    follower = ActivityFollower(core).start() if cfg.follow_activity else None
    try:
        # uvloop: the event loop both servers share, in C (the hit path is mostly loop work).
        uvloop.run(serve(settings, core, follower, tracing))
    finally:
        if follower is not None:
            follower.stop()
        core.close()
        shutdown_tracing()
        log.info("service_stopped")
    return 0
