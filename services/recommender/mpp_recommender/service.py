"""The recommender process: the gRPC server and the HTTP API (uvicorn) on one event loop,
plus the activity follower and the erasure feed threads; with ``recommender.workers`` other
than 1, a supervisor and that many such processes on the same ports
(``mpp_recommender.workers``).

HTTP listens on ``recommender.http_host:http_port`` (18086); ``MPP_HTTP__PORT``, which the
process manager (``mpp services``, ``mpp.pipeline``) sets for every service, takes precedence so
that its /readyz probe finds the service. gRPC listens on ``grpc.host:grpc.port`` (50051).
SIGTERM/SIGINT stop both servers (in-flight requests finish, 5 s at most) and the follower.
/readyz names the worker that answered (``worker``, ``pid``).
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

import structlog
import uvicorn
import uvloop

from mpp.auth import KeyRing
from mpp.config import Settings
from mpp.logs import configure_logging, get_logger
from mpp.observability import set_service
from mpp.tracing import configure_tracing, shutdown_tracing
from mpp_recommender.activity import ActivityFollower
from mpp_recommender.core import Recommender
from mpp_recommender.erasure_feed import ErasureFeed
from mpp_recommender.grpc_api import build_server
from mpp_recommender.http_api import create_app
from mpp_recommender.workers import Slot, http_host, http_port, refused, shared_socket

SERVICE = "recommender"


async def serve(
    settings: Settings,
    core: Recommender,
    follower: ActivityFollower | None,
    tracing: bool = False,
    slot: Slot | None = None,
    feed: ErasureFeed | None = None,
) -> None:
    """Both servers on one event loop until SIGTERM/SIGINT; ``tracing``: both doors start a
    span per request; ``slot``: this process is one of several workers on shared ports."""
    log = get_logger(SERVICE)
    # One key ring for both doors: a key's rate limit counts its requests through either.
    keys = KeyRing(settings.auth)
    if slot is not None:
        settings = settings.model_copy(
            update={"grpc": settings.grpc.model_copy(update={"port": slot.grpc_port})}
        )
    server, grpc_port = await build_server(
        settings, core, keys, tracing=tracing, reuse_port=slot is not None
    )
    await server.start()
    worker = {"worker": slot.index if slot else 0, "pid": os.getpid()}

    def readiness() -> dict[str, Any]:
        reasons = [
            part.problem
            for part in (follower, feed)
            if part is not None and part.problem is not None
        ]
        return {
            "status": "not_ready" if reasons else "ready",
            "reasons": reasons,
            # Informational: the service answers (degraded) whatever these say.
            "stores": core.store_states(),
            "catalog_loaded": core.postgres.catalog_loaded,
            **worker,
            "erasures_seen": feed.erasures if feed is not None else None,
        }

    sockets: list[socket.socket] | None = None
    port = http_port(settings)
    if slot is not None:
        listener = shared_socket(slot.http_host, slot.http_port)
        listener.listen(2048)
        sockets, port = [listener], slot.http_port
    config = uvicorn.Config(
        create_app(settings, core, readiness, keys, tracing=tracing),
        host=http_host(settings),
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # Longer than a load balancer's usual 60 s idle timeout, so that the balancer, not
        # the service, closes idle keep-alive connections (no request lost in between).
        timeout_keep_alive=75,
    )
    log.info("service_started", http_port=port, grpc_port=grpc_port, tracing=tracing, **worker)
    # uvicorn handles SIGTERM/SIGINT while it serves, then restores the previous handlers and
    # raises the signal again: with these no-op handlers in place, the process goes on to stop
    # gRPC, the follower and the stores' clients instead of dying on the spot.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        await uvicorn.Server(config).serve(sockets=sockets)
    finally:
        await server.stop(5)


def run(settings: Settings) -> int:
    """The service as one process (``python -m mpp_recommender`` with one worker; with more,
    ``__main__`` runs ``mpp_recommender.workers.supervise`` instead)."""
    configure_logging(settings, SERVICE)
    if refused(settings):
        return 2
    return _serve_process(settings, None)


def run_worker(settings: Settings, slot: Slot) -> int:
    """One worker of the supervisor's (``mpp_recommender.workers``)."""
    configure_logging(settings, SERVICE)
    structlog.contextvars.bind_contextvars(worker=slot.index)
    return _serve_process(settings, slot)


def _serve_process(settings: Settings, slot: Slot | None) -> int:
    # The shared store clients' series (Milvus, Neo4j, PostgreSQL) say service="recommender".
    set_service(SERVICE)
    # Off unless the OTEL_* variables turn it on (mpp.tracing).
    tracing = configure_tracing(SERVICE)
    log = get_logger(SERVICE)
    cfg = settings.recommender
    core = Recommender(settings)
    core.start()
    follower = ActivityFollower(core).start() if cfg.follow_activity else None
    # Every process learns every erasure, whichever worker or replica was asked for it.
    feed = ErasureFeed(core).start() if cfg.follow_activity else None
    try:
        # uvloop: the event loop both servers share, in C (the hit path is mostly loop work).
        uvloop.run(serve(settings, core, follower, tracing, slot, feed))
    finally:
        for part in (follower, feed):
            if part is not None:
                part.stop()
        core.close()
        shutdown_tracing()
        log.info("service_stopped")
    return 0
