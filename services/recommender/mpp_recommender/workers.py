"""The recommender on every core: a supervisor process and ``recommender.workers`` worker
processes, each a whole recommender (both doors, its own store clients, pools and activity
follower) sharing nothing but the stores.

Ports: every worker listens on the same HTTP and gRPC ports with SO_REUSEPORT, and the kernel
spreads new connections over them (a connection stays with one worker). The supervisor binds
both ports first (SO_REUSEPORT, not listening): that fails at once when another program
holds either port (another supervisor's SO_REUSEPORT socket too), holds the ports while a
worker restarts, and turns a port 0 into a free port that every worker then uses.

Metrics: the workers write their series to files in one directory (prometheus_client's
multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), so that /metrics on any worker reports the
sums over all of them; a gauge reports the largest live value (``mpp_breaker_open``).

Lifecycle: SIGTERM/SIGINT to the supervisor go to every worker, which finishes its in-flight
requests (``mpp_recommender.service``); a worker that dies is started again (after 1 s, then
doubling to 30 s while it keeps dying young). The supervisor exits 0 when every worker
stopped cleanly (or, still starting, ended by the SIGTERM), else 1.

Workers are spawned (a fresh interpreter, not fork): gRPC and the stores' clients do not
survive a fork, and the supervisor never opens any of them.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from mpp.auth import MISSING_KEYS
from mpp.config import Settings
from mpp.logs import configure_logging, get_logger

SERVICE = "recommender"
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# A worker that lived shorter than this died young: its restart waits longer each time.
YOUNG_S = 30.0
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 30.0
STOP_TIMEOUT_S = 20.0


def http_port(settings: Settings) -> int:
    """``MPP_HTTP__PORT``, which the process manager sets for every service, else the
    recommender's own."""
    return settings.http.port or settings.recommender.http_port


def http_host(settings: Settings) -> str:
    return settings.recommender.http_host if settings.http.port == 0 else settings.http.host


def refused(settings: Settings) -> bool:
    """Whether the service must not start: production without API keys (logged; elsewhere
    a warning only)."""
    log = get_logger(SERVICE)
    if settings.auth.enabled and not settings.auth.keys:
        if settings.environment == "production":
            log.error("refusing_to_start", reason=MISSING_KEYS)
            return True
        log.warning("no_api_keys", detail=MISSING_KEYS)
    return False


def supervise(settings: Settings, count: int) -> int:
    """``python -m mpp_recommender`` with several workers: this process only supervises
    (it imports neither the servers nor the stores' clients, so that it starts at once)."""
    configure_logging(settings, SERVICE)
    if refused(settings):
        return 2
    return Supervisor(settings, count, http_host(settings), http_port(settings)).run()


def cpu_limit(cpu_max: Path = CPU_MAX) -> int:
    """The CPUs this process may use: its affinity, capped by the cgroup v2 CPU quota (a
    container's CPU limit; rounded up); at least 1."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def worker_count(configured: int, cpu_max: Path = CPU_MAX) -> int:
    """``recommender.workers``, where 0 means one per usable CPU."""
    return configured if configured > 0 else cpu_limit(cpu_max)


def shared_socket(host: str, port: int, *, claim: bool = False) -> socket.socket:
    """A TCP socket bound to host:port (0: a free port) with SO_REUSEPORT, not listening.

    ``claim`` (the supervisor's): fail with OSError when anything is bound there already, an
    SO_REUSEPORT socket included. Without it, a second service of the same user started on
    the same port would join the first one's workers silently, each answering a share of
    the connections."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if claim and port:
        # A bind without SO_REUSEPORT conflicts with every socket on the port.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True, slots=True)
class Slot:
    """What a worker is told: its number, how many there are, and the ports they share."""

    index: int
    count: int
    http_host: str
    http_port: int
    grpc_port: int


@dataclass(slots=True)
class _Worker:
    slot: Slot
    process: BaseProcess | None = None
    started: float = 0.0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None
    exits: list[int | None] = field(default_factory=list)


def _worker_main(settings: Settings, slot: Slot) -> None:
    # Imported here: the supervisor itself never loads the servers or the stores' clients.
    from mpp_recommender.service import run_worker

    raise SystemExit(run_worker(settings, slot))


class Supervisor:
    """Starts ``count`` workers of ``settings`` on ``http_host``; see the module docstring."""

    def __init__(self, settings: Settings, count: int, http_host: str, http_port: int) -> None:
        self.settings = settings
        self.count = count
        self.http_host = http_host
        self.http_port = http_port
        self.log = get_logger(SERVICE)
        self._stopping = False
        self._context = multiprocessing.get_context("spawn")

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        grpc_cfg = self.settings.grpc
        # Held until the end: the ports stay this service's while a worker restarts.
        http_sock = shared_socket(self.http_host, self.http_port, claim=True)
        try:
            grpc_sock = shared_socket(grpc_cfg.host, grpc_cfg.port, claim=True)
        except OSError:
            http_sock.close()
            raise
        metrics_dir = tempfile.mkdtemp(prefix="mpp-recommender-metrics-")
        # Inherited by every worker: their series go to files there (read before the
        # workers import prometheus_client).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        workers = [
            _Worker(
                Slot(
                    index=i,
                    count=self.count,
                    http_host=self.http_host,
                    http_port=http_sock.getsockname()[1],
                    grpc_port=grpc_sock.getsockname()[1],
                )
            )
            for i in range(self.count)
        ]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.log.info(
            "workers_starting",
            workers=self.count,
            http_port=workers[0].slot.http_port,
            grpc_port=workers[0].slot.grpc_port,
        )
        try:
            for worker in workers:
                self._start(worker)
            while not self._stopping:
                self._watch(workers)
            return self._stop_all(workers)
        finally:
            http_sock.close()
            grpc_sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _start(self, worker: _Worker) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(self.settings, worker.slot),
            name=f"{SERVICE}-worker-{worker.slot.index}",
        )
        process.start()
        worker.process, worker.started, worker.restart_at = process, time.monotonic(), None

    def _watch(self, workers: list[_Worker]) -> None:
        """Wait up to 0.5 s for a worker to end; schedule or make the restarts due."""
        alive = [w.process.sentinel for w in workers if w.process is not None]
        if alive:
            wait(alive, timeout=0.5)
        else:
            time.sleep(0.5)
        now = time.monotonic()
        for worker in workers:
            process = worker.process
            if process is not None and not process.is_alive() and not self._stopping:
                self._ended(worker, process, now)
            if worker.restart_at is not None and now >= worker.restart_at and not self._stopping:
                self._start(worker)

    def _ended(self, worker: _Worker, process: BaseProcess, now: float) -> None:
        from prometheus_client import multiprocess

        lived = now - worker.started
        worker.backoff_s = (
            min(worker.backoff_s * 2, MAX_BACKOFF_S) if lived < YOUNG_S else FIRST_BACKOFF_S
        )
        worker.exits.append(process.exitcode)
        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
        worker.process, worker.restart_at = None, now + worker.backoff_s
        self.log.error(
            "worker_exited",
            worker=worker.slot.index,
            pid=process.pid,
            exitcode=process.exitcode,
            lived_s=round(lived, 1),
            restart_in_s=worker.backoff_s,
        )

    def _stop_all(self, workers: list[_Worker]) -> int:
        running = [w.process for w in workers if w.process is not None and w.process.is_alive()]
        self.log.info("workers_stopping", workers=len(running))
        for process in running:
            process.terminate()  # SIGTERM: each worker drains its requests
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
        clean = True
        for process in running:
            if process.is_alive():
                self.log.error("worker_killed", pid=process.pid)
                process.kill()
                process.join()
            # SIGTERM itself ends a worker that was still starting: a clean stop too.
            clean = clean and process.exitcode in (0, -signal.SIGTERM)
        return 0 if clean else 1
