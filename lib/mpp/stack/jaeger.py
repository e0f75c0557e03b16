"""Jaeger all-in-one on loopback, built from source (mpp.stack.gobuilds).

Jaeger v2 (the ``jaeger`` binary, an OpenTelemetry Collector distribution) with a
configuration of ours: OTLP receivers on 127.0.0.1:14317 (gRPC) and :14318 (HTTP), traces kept
in memory (the newest 20,000; gone when it stops), the query API and UI on :16686 (gRPC
:16685). Services send their spans there when OTEL_EXPORTER_OTLP_ENDPOINT says so
(mpp.tracing); the tests read them back through the query API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import httpx

from mpp.config import Settings
from mpp.stack import gobuilds
from mpp.stack.base import Progress, Server, StackError, port_open

HOST = "127.0.0.1"
QUERY_PORT = 16686
QUERY_GRPC_PORT = 16685
OTLP_GRPC_PORT = 14317
OTLP_HTTP_PORT = 14318
MAX_TRACES = 20_000


def render_config(
    host: str = HOST,
    otlp_grpc: int = OTLP_GRPC_PORT,
    otlp_http: int = OTLP_HTTP_PORT,
    query: int = QUERY_PORT,
    query_grpc: int = QUERY_GRPC_PORT,
    max_traces: int = MAX_TRACES,
) -> str:
    """Jaeger v2's configuration: OTLP in, memory storage, the query API; nothing else listens.

    Written as JSON, which is YAML too.
    """
    config = {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            # The collector's own metrics would listen on :8888; none are wanted here.
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_storage": {
                "backends": {"memory_store": {"memory": {"max_traces": max_traces}}}
            },
            "jaeger_query": {
                "storage": {"traces": "memory_store"},
                # On by default: Jaeger would trace its own queries to localhost:4317, where
                # nothing listens (a warning in the log every few seconds).
                "enable_tracing": False,
                "http": {"endpoint": f"{host}:{query}"},
                "grpc": {"endpoint": f"{host}:{query_grpc}"},
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{host}:{otlp_grpc}"},
                    "http": {"endpoint": f"{host}:{otlp_http}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory_store"}},
    }
    return json.dumps(config, indent=2) + "\n"


class JaegerServer(Server):
    name = "jaeger"
    default_port = QUERY_PORT

    def __init__(self, settings: Settings, stack_dir: Path, repo_root: Path) -> None:
        super().__init__(settings, stack_dir, repo_root)
        self.config_file = self.home / "jaeger.yaml"
        self.build_log = self.home / "build.log"
        self.binary: Path | None = None

    @property
    def query_url(self) -> str:
        return f"http://{HOST}:{QUERY_PORT}"

    @property
    def otlp_endpoint(self) -> str:
        return f"http://{HOST}:{OTLP_GRPC_PORT}"

    def address(self) -> tuple[str, int]:
        return HOST, QUERY_PORT

    def probe(self) -> str | None:
        try:
            answer = httpx.get(f"{self.query_url}/api/services", timeout=2.0)
            body = answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            return f"query API: {exc}"
        if answer.status_code != 200:
            return f"query API: HTTP {answer.status_code}"
        if not isinstance(body, dict) or "data" not in body:
            return "query API: not Jaeger's answer"
        for port in (OTLP_GRPC_PORT, OTLP_HTTP_PORT):
            if not port_open(HOST, port):
                return f"OTLP port {port} closed"
        return None

    def install(self, progress: Progress) -> None:
        (self.binary,) = gobuilds.binary(
            self.repo_root, ("jaeger",), self.cache_dir, self.build_log, progress
        )

    def prepare(self, progress: Progress) -> None:
        self.config_file.write_text(render_config())

    def command(self) -> Sequence[str]:
        if self.binary is None:
            raise StackError("jaeger: install() must run before the server starts")
        return [str(self.binary), "--config", f"file:{self.config_file.resolve()}"]
