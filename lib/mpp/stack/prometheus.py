"""Prometheus on loopback (http://127.0.0.1:19090), built from source (mpp.stack.gobuilds).

What it scrapes comes from file service discovery: one JSON file per job in the ``targets``
folder under the stack's prometheus folder (``write_targets``; the tests' ``prometheus``
fixture writes them), each target scraped every second. When the chart's alert rules
(helm/mpp/files/alerts.yaml) exist, Prometheus evaluates them too, every second. The
configuration is checked with promtool before the server starts, so that a broken rules file
is reported as such. Its data (the TSDB, kept two days) lives under the stack folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from mpp.config import Settings
from mpp.stack import gobuilds
from mpp.stack.base import Progress, Server, StackError, run_checked

HOST = "127.0.0.1"
PORT = 19090
SCRAPE_INTERVAL = "1s"
RETENTION = "2d"
ALERT_RULES = Path("helm") / "mpp" / "files" / "alerts.yaml"
TARGETS_DIR = "targets"
_JOB = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def render(
    scrape_configs: Sequence[dict[str, Any]],
    rule_files: Sequence[Path | str] = (),
    scrape_interval: str = SCRAPE_INTERVAL,
) -> str:
    """prometheus.yml with these scrape jobs, each target scraped and every rule evaluated
    each ``scrape_interval``. Written as JSON, which is YAML too (and lets the tests' fixture
    read it back)."""
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            # A scrape may not outlast the interval (Prometheus refuses the config).
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": list(scrape_configs),
    }
    return json.dumps(config, indent=2) + "\n"


def render_config(
    targets_dir: Path, rule_files: Sequence[Path] = (), scrape_interval: str = SCRAPE_INTERVAL
) -> str:
    """prometheus.yml: every target from the file-SD folder, scraped each ``scrape_interval``."""
    # A target's file gives its job label (write_targets); "mpp" is the fallback.
    file_sd = {"files": [str(targets_dir / "*.json")], "refresh_interval": "5s"}
    return render([{"job_name": "mpp", "file_sd_configs": [file_sd]}], rule_files, scrape_interval)


def render_targets(job: str, targets: Sequence[str], labels: dict[str, str] | None = None) -> str:
    """A file-SD file: the ``host:port`` targets under job label ``job``."""
    if not _JOB.fullmatch(job):
        raise ValueError(f"job name {job!r}: letters, digits, '_', '.', '-' only")
    for target in targets:
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit() or "/" in target:
            raise ValueError(f"target {target!r} is not host:port")
    group = {"targets": list(targets), "labels": {**(labels or {}), "job": job}}
    return json.dumps([group], indent=2) + "\n"


def write_targets(
    targets_dir: Path, job: str, targets: Sequence[str], labels: dict[str, str] | None = None
) -> Path:
    """Write (atomically: Prometheus watches the folder) the file-SD file of ``job``."""
    content = render_targets(job, targets, labels)
    targets_dir.mkdir(parents=True, exist_ok=True)
    path = targets_dir / f"{job}.json"
    # Not *.json while half written: the glob must never match a partial file.
    partial = targets_dir / f".{job}.json.{os.getpid()}.tmp"
    partial.write_text(content)
    partial.replace(path)
    return path


class PrometheusServer(Server):
    name = "prometheus"
    default_port = PORT

    def __init__(self, settings: Settings, stack_dir: Path, repo_root: Path) -> None:
        super().__init__(settings, stack_dir, repo_root)
        self.config_file = self.home / "prometheus.yml"
        self.targets_dir = self.home / TARGETS_DIR
        self.build_log = self.home / "build.log"
        self.binary: Path | None = None
        self.promtool: Path | None = None

    @property
    def url(self) -> str:
        host, port = self.address()
        return f"http://{host}:{port}"

    def address(self) -> tuple[str, int]:
        return HOST, PORT

    def probe(self) -> str | None:
        try:
            answer = httpx.get(f"{self.url}/api/v1/status/buildinfo", timeout=2.0)
            if answer.status_code != 200:
                return f"buildinfo: HTTP {answer.status_code}"
            if not answer.json().get("data", {}).get("version"):
                return "buildinfo: not Prometheus's answer"
            ready = httpx.get(f"{self.url}/-/ready", timeout=2.0)
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return str(exc) or repr(exc)
        return None if ready.status_code == 200 else f"not ready yet (HTTP {ready.status_code})"

    def install(self, progress: Progress) -> None:
        self.binary, self.promtool = gobuilds.binary(
            self.repo_root, ("prometheus", "promtool"), self.cache_dir, self.build_log, progress
        )

    def rule_files(self) -> list[Path]:
        rules = self.repo_root / ALERT_RULES
        return [rules.resolve()] if rules.is_file() else []

    def prepare(self, progress: Progress) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(render_config(self.targets_dir.resolve(), self.rule_files()))
        if self.promtool is None:
            raise StackError("prometheus: install() must run before the server starts")
        run_checked(
            [str(self.promtool), "check", "config", str(self.config_file)],
            f"prometheus: promtool check config {self.config_file}",
        )

    def after_ready(self, progress: Progress) -> None:
        """A server we started reloads when its configuration changed (the rules file came)."""
        if self.owned_pid() is None:
            return
        wanted = render_config(self.targets_dir.resolve(), self.rule_files())
        if self.config_file.exists() and self.config_file.read_text() == wanted:
            return
        self.config_file.write_text(wanted)
        progress("prometheus: configuration changed, reloading")
        try:
            answer = httpx.post(f"{self.url}/-/reload", timeout=30.0)
        except httpx.HTTPError as exc:
            raise StackError(f"prometheus: reloading {self.config_file} failed: {exc}") from exc
        if answer.status_code != 200:
            raise StackError(
                f"prometheus: reloading {self.config_file} failed (HTTP {answer.status_code}): "
                f"{answer.text[:2000]}"
            )

    def command(self) -> Sequence[str]:
        if self.binary is None:
            raise StackError("prometheus: install() must run before the server starts")
        host, port = self.address()
        return [
            str(self.binary),
            f"--config.file={self.config_file.resolve()}",
            f"--storage.tsdb.path={self.data_dir.resolve()}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address={host}:{port}",
            # POST /-/reload: the rules file may change while the server runs.
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
