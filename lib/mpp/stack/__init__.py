"""The local stack: real Kafka, Neo4j, PostgreSQL, Redis, Milvus Lite and a BigQuery emulator
on loopback.

``up`` installs what is missing (cached under ~/.cache/mpp), starts every server that does not
already answer, all at once, and waits for each with a deadline; ``down`` stops what ``up``
started and nothing else; ``status`` probes each endpoint. Optional groups join with
``with_``: ``observability`` adds Jaeger and Prometheus (built from source the first time).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mpp.config import Settings
from mpp.stack.base import Progress, Server, StackError, State, Status, apt_install, port_open
from mpp.stack.bigquery import BigQueryServer
from mpp.stack.jaeger import JaegerServer
from mpp.stack.kafka import KafkaServer
from mpp.stack.milvus import MilvusServer
from mpp.stack.neo4j import Neo4jServer
from mpp.stack.postgres import PostgresServer
from mpp.stack.prometheus import PrometheusServer
from mpp.stack.redis import RedisServer

__all__ = [
    "OPTIONAL_GROUPS",
    "SERVER_NAMES",
    "Stack",
    "StackError",
    "State",
    "Status",
    "repo_root",
]

SERVER_TYPES: tuple[type[Server], ...] = (
    KafkaServer,
    Neo4jServer,
    PostgresServer,
    RedisServer,
    MilvusServer,
    BigQueryServer,
)
SERVER_NAMES = tuple(t.name for t in SERVER_TYPES)
# Servers started only when asked for (`mpp stack up --with observability`, or by name).
OPTIONAL_GROUPS: dict[str, tuple[type[Server], ...]] = {
    "observability": (JaegerServer, PrometheusServer),
}
OPTIONAL_TYPES = tuple(t for group in OPTIONAL_GROUPS.values() for t in group)


def repo_root() -> Path:
    """The checkout this library runs from (the stack's scripts and data live there)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "stack").is_dir():
            return parent
    return Path.cwd()


def stack_dir(settings: Settings) -> Path:
    path = settings.stack.dir
    return path if path.is_absolute() else repo_root() / path


class Stack:
    """A set of processes started together: the servers, or the platform's services."""

    def __init__(
        self,
        settings: Settings,
        only: tuple[str, ...] = (),
        servers: list[Server] | None = None,
        stop_upstream_first: bool = False,
        with_: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.dir = stack_dir(settings)
        self.stop_upstream_first = stop_upstream_first
        if servers is not None:
            self.servers = servers
            return
        names = SERVER_NAMES + tuple(t.name for t in OPTIONAL_TYPES)
        unknown = set(only) - set(names)
        if unknown:
            raise StackError(
                f"unknown server(s) {', '.join(sorted(unknown))}; choose from " + ", ".join(names)
            )
        unknown = set(with_) - set(OPTIONAL_GROUPS)
        if unknown:
            raise StackError(
                f"unknown group(s) {', '.join(sorted(unknown))}; choose from "
                + ", ".join(OPTIONAL_GROUPS)
            )
        # The usual servers (or those named), then the optional groups' (or those named).
        wanted = [t for t in SERVER_TYPES if not only or t.name in only]
        for group in with_:
            wanted += [t for t in OPTIONAL_GROUPS[group] if t not in wanted]
        wanted += [t for t in OPTIONAL_TYPES if t.name in only and t not in wanted]
        self.servers = [t(settings, self.dir, repo_root()) for t in wanted]

    @classmethod
    def services(
        cls, settings: Settings, only: tuple[str, ...] = (), extra_env: dict[str, str] | None = None
    ) -> Stack:
        """The platform's worker services as local processes (see mpp.stack.services)."""
        from mpp.stack.services import SERVICES, ServiceProcess

        unknown = set(only) - set(SERVICES)
        if unknown:
            raise StackError(
                f"unknown service(s) {', '.join(sorted(unknown))}; choose from "
                + ", ".join(SERVICES)
            )
        processes: list[Server] = [
            ServiceProcess(name, settings, stack_dir(settings), repo_root(), extra_env=extra_env)
            for name in SERVICES
            if not only or name in only
        ]
        return cls(settings, servers=processes, stop_upstream_first=True)

    def up(self, progress: Progress) -> list[Status]:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        # Debian packages in one apt-get call (two at once would fight over apt's lock), and
        # only for servers that do not already answer.
        packages = sorted(
            {
                package
                for server in self.servers
                if not port_open(*server.address())
                for package in server.missing_packages()
            }
        )
        if packages:
            apt_install(packages, progress)
        # Installs are independent and mostly I/O (Maven, apt): run them side by side.
        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            launched = list(pool.map(lambda s: s.launch(progress), self.servers))
        deadline = time.monotonic() + self.settings.stack.ready_timeout_s
        errors: list[str] = []

        def wait(pair: tuple[Server, object]) -> None:
            server, process = pair
            try:
                server.wait_ready(process, deadline)  # type: ignore[arg-type]
                server.after_ready(progress)
                progress(f"{server.name}: ready on {server.endpoint()}")
            except StackError as exc:
                errors.append(str(exc))

        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            list(pool.map(wait, zip(self.servers, launched, strict=True)))
        if errors:
            raise StackError("\n\n".join(errors))
        progress(f"stack ready in {time.monotonic() - started:.1f}s")
        return self.status()

    def down(self, progress: Progress) -> list[str]:
        stopped: list[str] = []
        # Services stop upstream first, so that what ingest still produces is drained by the
        # others; servers stop in reverse order, the JVMs last.
        order = self.servers if self.stop_upstream_first else list(reversed(self.servers))
        for server in order:
            if server.stop(progress):
                stopped.append(server.name)
        return stopped

    def status(self) -> list[Status]:
        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            return list(pool.map(lambda s: s.status(), self.servers))
