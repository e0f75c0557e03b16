"""The local Jaeger and Prometheus for tests: the ``jaeger`` and ``prometheus`` fixtures.

Both start the servers through mpp.stack when they do not answer (building them first when
they were never built: scripts/install_observability.sh) and reuse them when they do. Import
the fixtures into a conftest.py (``from tests.observability import jaeger, prometheus``).

- ``jaeger.otlp_endpoint`` is what a service's OTEL_EXPORTER_OTLP_ENDPOINT should say;
  ``traces``/``trace``/``wait_for_trace`` read spans back through Jaeger's query API.
- ``prometheus.add_targets(job, ["127.0.0.1:PORT"])`` has Prometheus scrape those /metrics
  every second under the label job=JOB (a file-SD file, removed when the test session ends);
  ``query``/``value``/``wait_for`` ask its query API.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mpp.config import Settings
from mpp.stack import prometheus as prometheus_stack
from mpp.stack.jaeger import HOST, OTLP_GRPC_PORT, QUERY_PORT

TIMEOUT = httpx.Timeout(10.0)
INSTALL = Path(__file__).resolve().parents[1] / "scripts" / "install_observability.sh"


def built_binary(name: str) -> Path:
    """The path of jaeger, prometheus or promtool, built first when it never was (at once when
    it was; the first build takes minutes). Its absence is a failure, never a skip."""
    built = subprocess.run(
        ["bash", str(INSTALL), name], capture_output=True, text=True, timeout=1700, check=False
    )
    assert built.returncode == 0, f"install_observability.sh {name}:\n{built.stderr[-3000:]}"
    found = subprocess.run(
        ["bash", str(INSTALL), "--installed", name], capture_output=True, text=True, check=False
    )
    assert found.returncode == 0, found.stderr
    path = Path(found.stdout.strip())
    assert path.is_file(), path
    return path


class Jaeger:
    """Jaeger's query API (the local one's, http://127.0.0.1:16686/api, unless ``query_url``
    names another: the cluster's, at its Service's address)."""

    def __init__(self, query_url: str = f"http://{HOST}:{QUERY_PORT}") -> None:
        self.otlp_endpoint = f"http://{HOST}:{OTLP_GRPC_PORT}"
        self.query_url = query_url
        self._http = httpx.Client(base_url=self.query_url, timeout=TIMEOUT)

    def close(self) -> None:
        self._http.close()

    def services(self) -> list[str]:
        answer = self._http.get("/api/services")
        answer.raise_for_status()
        return list(answer.json().get("data") or [])

    def traces(
        self,
        service: str,
        lookback_s: int = 900,
        limit: int = 50,
        tags: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The newest traces with a span of ``service`` (Jaeger's /api/traces "data" list)."""
        now_us = int(time.time() * 1_000_000)
        params: dict[str, str | int] = {
            "service": service,
            "start": now_us - lookback_s * 1_000_000,
            "end": now_us,
            "limit": limit,
        }
        if tags:
            params["tags"] = json.dumps(tags)
        answer = self._http.get("/api/traces", params=params)
        answer.raise_for_status()
        return list(answer.json().get("data") or [])

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """One whole trace by id, or None when Jaeger has no such trace."""
        answer = self._http.get(f"/api/traces/{trace_id}")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        data = answer.json().get("data") or []
        return data[0] if data else None

    def wait_for_trace(
        self, predicate: Callable[[dict[str, Any]], bool], service: str, timeout_s: float = 60
    ) -> dict[str, Any]:
        """The first trace of ``service`` that ``predicate`` accepts, polling until it comes."""
        deadline = time.monotonic() + timeout_s
        seen: list[dict[str, Any]] = []
        while True:
            seen = self.traces(service)
            for trace in seen:
                if predicate(trace):
                    return trace
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        raise AssertionError(
            f"no trace of service {service!r} matched within {timeout_s}s; "
            f"{len(seen)} trace(s) seen, services known: {self.services()}"
        )


class Prometheus:
    """Prometheus's query API (http://127.0.0.1:19090/api/v1) and its file-SD folder."""

    def __init__(self, url: str = f"http://{prometheus_stack.HOST}:{prometheus_stack.PORT}"):
        self.url = url
        self._http = httpx.Client(base_url=url, timeout=TIMEOUT)
        self._written: list[Path] = []
        self._targets_dir: Path | None = None

    def close(self) -> None:
        for path in self._written:
            path.unlink(missing_ok=True)
        self._http.close()

    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        answer = self._http.get(f"/api/v1/{path}", params=params)
        body = answer.json()
        if answer.status_code != 200 or body.get("status") != "success":
            raise AssertionError(
                f"Prometheus {path} {params or ''}: HTTP {answer.status_code}, "
                f"{body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = self._api("query", {"query": expr})
        if data.get("resultType") != "vector":
            raise AssertionError(f"{expr!r} gave a {data.get('resultType')}, not a vector")
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The one series' value; None when there is none. Several series: sum() them first."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(
                f"{expr!r} gave {len(result)} series; aggregate them (sum(...)): "
                + ", ".join(str(r["metric"]) for r in result[:5])
            )
        return float(result[0]["value"][1])

    def wait_for(
        self, expr: str, predicate: Callable[[float], bool], timeout_s: float = 60
    ) -> float:
        """``value(expr)`` once ``predicate`` accepts it, polling every half second."""
        deadline = time.monotonic() + timeout_s
        last: float | None = None
        while True:
            last = self.value(expr)
            if last is not None and predicate(last):
                return last
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{expr!r} did not reach the expected value within {timeout_s}s "
                    f"(last value: {last})"
                )
            time.sleep(0.5)

    def alert_rules(self) -> list[dict[str, Any]]:
        """The alerting rules it has loaded (/api/v1/rules), each with its evaluation's health."""
        groups = self._api("rules", {"type": "alert"})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def targets_dir(self) -> Path:
        """The file-SD folder that the running Prometheus watches (read from its own config)."""
        if self._targets_dir is None:
            flags = self._api("status/flags")
            config = Path(flags["config.file"])
            try:
                rendered = json.loads(config.read_text())
                pattern = rendered["scrape_configs"][0]["file_sd_configs"][0]["files"][0]
            except (OSError, ValueError, KeyError, IndexError) as exc:
                raise AssertionError(
                    f"the Prometheus on {self.url} was not started by mpp.stack "
                    f"(its config {config} has no file-SD folder of ours): {exc!r}"
                ) from exc
            self._targets_dir = Path(pattern).parent
        return self._targets_dir

    def add_targets(self, job: str, targets: list[str], timeout_s: float = 30) -> None:
        """Scrape ``targets`` (host:port, /metrics) every second under job=``job``.

        Returns once Prometheus lists them as active targets (discovery takes a few seconds).
        """
        path = prometheus_stack.write_targets(self.targets_dir(), job, targets)
        if path not in self._written:
            self._written.append(path)
        wanted = set(targets)
        deadline = time.monotonic() + timeout_s
        while True:
            active = self._api("targets", {"state": "active"})["activeTargets"]
            found = {t["labels"].get("instance") for t in active if t["labels"].get("job") == job}
            if wanted <= found:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"Prometheus did not pick up {path} within {timeout_s}s "
                    f"(job {job!r} targets seen: {sorted(t for t in found if t)})"
                )
            time.sleep(0.5)

    def remove_targets(self, job: str) -> None:
        path = self.targets_dir() / f"{job}.json"
        path.unlink(missing_ok=True)
        if path in self._written:
            self._written.remove(path)


def _start(name: str) -> None:
    from mpp.stack import Stack

    # Progress on stderr (shown with -s): a first start may build the server for minutes.
    Stack(Settings(), only=(name,)).up(lambda message: sys.stderr.write(f"[{name}] {message}\n"))


@pytest.fixture(scope="session")
def jaeger() -> Iterator[Jaeger]:
    """The local Jaeger (started through mpp.stack unless it already answers)."""
    _start("jaeger")
    client = Jaeger()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def prometheus() -> Iterator[Prometheus]:
    """The local Prometheus (started through mpp.stack unless it already answers)."""
    _start("prometheus")
    client = Prometheus()
    try:
        yield client
    finally:
        client.close()
