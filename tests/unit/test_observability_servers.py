"""The local Jaeger's and Prometheus's configuration, the file-SD files, the stack's groups and
scripts/install_observability.sh's bookkeeping (no server, no build)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from mpp.config import Settings
from mpp.stack import OPTIONAL_GROUPS, SERVER_NAMES, Stack, StackError
from mpp.stack import jaeger as jaeger_stack
from mpp.stack.prometheus import PrometheusServer, render_config, render_targets, write_targets

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install_observability.sh"


def test_prometheus_config_scrapes_the_file_sd_folder_every_second(tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    config = json.loads(render_config(targets))
    assert config["global"] == {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    assert config["rule_files"] == []
    (job,) = config["scrape_configs"]
    (sd,) = job["file_sd_configs"]
    assert sd["files"] == [f"{targets}/*.json"]


def test_prometheus_config_loads_the_rules_it_is_given(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yaml"
    config = json.loads(render_config(tmp_path, [rules], scrape_interval="15s"))
    assert config["rule_files"] == [str(rules)]
    assert config["global"]["scrape_timeout"] == "15s"


def test_the_server_loads_the_charts_alert_rules_only_when_the_file_exists(
    tmp_path: Path,
) -> None:
    server = PrometheusServer(Settings(), tmp_path / ".stack", tmp_path)
    assert server.rule_files() == []
    rules = tmp_path / "helm" / "mpp" / "files" / "alerts.yaml"
    rules.parent.mkdir(parents=True)
    rules.write_text("groups: []\n")
    assert server.rule_files() == [rules.resolve()]
    assert server.targets_dir == tmp_path / ".stack" / "prometheus" / "targets"


def test_prometheus_listens_on_loopback_with_reload_and_its_data_under_the_stack(
    tmp_path: Path,
) -> None:
    server = PrometheusServer(Settings(), tmp_path / ".stack", tmp_path)
    server.binary = Path("/opt/prometheus")
    argv = list(server.command())
    assert argv[0] == "/opt/prometheus"
    assert "--web.listen-address=127.0.0.1:19090" in argv
    assert "--web.enable-lifecycle" in argv
    assert f"--storage.tsdb.path={(tmp_path / '.stack' / 'prometheus' / 'data').resolve()}" in argv


def test_a_file_sd_file_names_its_job_and_targets() -> None:
    groups = json.loads(render_targets("e2e-1", ["127.0.0.1:9101", "127.0.0.1:9102"], {"a": "b"}))
    assert groups == [
        {"targets": ["127.0.0.1:9101", "127.0.0.1:9102"], "labels": {"a": "b", "job": "e2e-1"}}
    ]


@pytest.mark.parametrize("job", ["", "a/b", "../x", "sp ace", "x" * 101])
def test_a_job_name_must_be_a_safe_file_name(job: str) -> None:
    with pytest.raises(ValueError, match="job name"):
        render_targets(job, ["127.0.0.1:1"])


@pytest.mark.parametrize("target", ["127.0.0.1", "http://127.0.0.1:80", ":80", "host:port"])
def test_a_target_must_be_host_and_port(target: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        render_targets("job", [target])


def test_writing_targets_replaces_the_file_whole_and_leaves_no_partial_file(
    tmp_path: Path,
) -> None:
    path = write_targets(tmp_path / "targets", "job", ["127.0.0.1:1"])
    assert path == tmp_path / "targets" / "job.json"
    write_targets(tmp_path / "targets", "job", ["127.0.0.1:2"])
    assert json.loads(path.read_text())[0]["targets"] == ["127.0.0.1:2"]
    assert [p.name for p in (tmp_path / "targets").iterdir()] == ["job.json"]


def test_jaeger_takes_otlp_and_serves_queries_on_loopback_only() -> None:
    config = json.loads(jaeger_stack.render_config())
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "127.0.0.1:14317"
    assert protocols["http"]["endpoint"] == "127.0.0.1:14318"
    query = config["extensions"]["jaeger_query"]
    assert query["http"]["endpoint"] == "127.0.0.1:16686"
    assert config["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    # Every listener of the configuration is on loopback, and the collector's own metrics
    # (which would listen on :8888) are off.
    endpoints: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "endpoint":
                    endpoints.append(value)
                walk(value)

    walk(config)
    assert len(endpoints) == 4
    assert all(e.startswith("127.0.0.1:") for e in endpoints)
    assert config["service"]["telemetry"]["metrics"]["level"] == "none"
    # Jaeger does not trace itself (it would export to localhost:4317).
    assert query["enable_tracing"] is False
    storage = config["extensions"]["jaeger_storage"]["backends"]
    assert storage[query["storage"]["traces"]]["memory"]["max_traces"] == 20_000


def test_the_observability_group_joins_the_usual_servers_only_when_asked() -> None:
    settings = Settings()
    assert [s.name for s in Stack(settings).servers] == list(SERVER_NAMES)
    names = [s.name for s in Stack(settings, with_=("observability",)).servers]
    assert names == [*SERVER_NAMES, "jaeger", "prometheus"]
    assert [s.name for s in Stack(settings, only=("jaeger",)).servers] == ["jaeger"]
    only_kafka = Stack(settings, only=("kafka",), with_=("observability",)).servers
    assert [s.name for s in only_kafka] == ["kafka", "jaeger", "prometheus"]
    assert set(OPTIONAL_GROUPS) == {"observability"}
    with pytest.raises(StackError, match="unknown group"):
        Stack(settings, with_=("tracing",))
    with pytest.raises(StackError, match="unknown server"):
        Stack(settings, only=("grafana",))


def _script(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MPP_CACHE_DIR": str(cache)},
        check=False,
        timeout=30,
    )


def test_installed_names_a_finished_build_only(tmp_path: Path) -> None:
    missing = _script(tmp_path, "--installed", "promtool")
    assert missing.returncode == 1
    assert "not built" in missing.stderr
    home = tmp_path / "observability" / "promtool-v0.316.0"
    (home / "bin").mkdir(parents=True)
    binary = home / "bin" / "promtool"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    # A binary without the stamp is an interrupted or older build: not installed.
    assert _script(tmp_path, "--installed", "promtool").returncode == 1
    (home / ".complete").write_text("1\n")
    found = _script(tmp_path, "--installed", "promtool")
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(binary)


def test_a_finished_build_is_reused_without_building(tmp_path: Path) -> None:
    home = tmp_path / "observability" / "jaeger-v1.75.0"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "jaeger").write_text("#!/bin/sh\n")
    (home / "bin" / "jaeger").chmod(0o755)
    (home / ".complete").write_text("1\n")
    # No go on PATH: any attempt to build would fail.
    env = {**os.environ, "MPP_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["bash", str(SCRIPT), "jaeger"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "already built" in result.stderr


@pytest.mark.parametrize("args", [["grafana"], ["--installed"], ["--installed", "x"]])
def test_the_script_refuses_unknown_names(tmp_path: Path, args: list[str]) -> None:
    result = _script(tmp_path, *args)
    assert result.returncode == 2
    assert "usage" in result.stderr
