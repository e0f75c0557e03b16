"""The platform's own services as local processes, managed like the stack's servers.

``mpp services up`` starts each worker (``python -m mpp_<name>``) detached, with its log under
``.stack/services/`` and its /healthz, /readyz, /metrics on a fixed loopback port; it is ready
when /readyz answers 200 (its consumer has partitions and its store answers). ``down`` sends
SIGTERM, which finishes the current batch and commits before exiting.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from mpp.auth import key_entry
from mpp.config import Settings
from mpp.stack.base import Progress, Server

# The services with an API behind keys: they get the local key unless MPP_AUTH__KEYS is set.
KEYED = frozenset({"recommender", "analytics"})

# name -> (module, default health port)
SERVICES: dict[str, tuple[str, int]] = {
    "ingest": ("mpp_ingest", 18081),
    "embedder": ("mpp_embedder", 18082),
    "vector-writer": ("mpp_vector_writer", 18083),
    "graph-writer": ("mpp_graph_writer", 18084),
    "analytics": ("mpp_analytics", 18085),
    # gRPC on MPP_GRPC__PORT (50051); /readyz, /metrics and the HTTP API on this port.
    "recommender": ("mpp_recommender", 18086),
}


def local_api_key(stack_dir: Path) -> str:
    """The local stack's admin API key: made once, kept in ``<stack>/recommender.key``.

    ``mpp services up`` hands its SHA-256 (as the key ``local``, scope ``admin``) to the
    recommender and to analytics unless ``MPP_AUTH__KEYS`` is set, and ``mpp recommend`` sends
    it, so that authentication stays on locally too.
    """
    path = stack_dir / "recommender.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made meanwhile by another process
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class ServiceProcess(Server):
    """One worker service run from this checkout's environment."""

    default_port = 0
    stop_timeout_s = 60.0

    def __init__(
        self,
        name: str,
        settings: Settings,
        stack_dir: Path,
        repo_root: Path,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        super().__init__(settings, stack_dir / "services", repo_root)
        self.module, default_port = SERVICES[name]
        self.port = port or default_port
        self.extra_env = dict(extra_env or {})

    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def probe(self) -> str | None:
        url = f"http://127.0.0.1:{self.port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return None if response.status == 200 else f"/readyz answered {response.status}"
        except urllib.error.HTTPError as exc:
            return f"/readyz answered {exc.code}: {exc.read().decode(errors='replace')[:200]}"
        except OSError as exc:
            return str(exc)

    def install(self, progress: Progress) -> None:
        return None

    def command(self) -> Sequence[str]:
        return [sys.executable, "-m", self.module]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["MPP_HTTP__HOST"] = "127.0.0.1"
        env["MPP_HTTP__PORT"] = str(self.port)
        env.setdefault("MPP_LOG_FORMAT", "json")
        if self.name in KEYED and "MPP_AUTH__KEYS" not in env:
            key = local_api_key(self.stack_dir)
            env["MPP_AUTH__KEYS"] = json.dumps([key_entry("local", key, ["admin"])])
        return env
