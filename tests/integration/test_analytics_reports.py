"""People read the numbers: the HTTP report (JSON, page, PNG charts), the CLI, and the service
run as a process (``python -m mpp_analytics``) as ``mpp services up`` runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from mpp import analytics
from mpp.config import Settings
from mpp.stack.services import SERVICES

from .test_analytics_postgres import as_records, workload, write
from .test_analytics_service import produce
from .test_vectors import free_port

PNG = b"\x89PNG\r\n\x1a\n"


def get(url: str, timeout: float = 10) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def environment(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    topics = settings.kafka.topics
    return {
        "MPP_POSTGRES__DATABASE": settings.postgres.database,
        "MPP_KAFKA__TOPICS__ENRICHED": topics.enriched,
        "MPP_KAFKA__TOPICS__FEEDBACK": topics.feedback,
        "MPP_KAFKA__TOPICS__ERASURE": topics.erasure,
        "MPP_KAFKA__TOPICS__DLQ": topics.dlq,
        "MPP_KAFKA__GROUP_PREFIX": f"test-{settings.postgres.database}",
        "MPP_WAREHOUSE__SQLITE_PATH": str(tmp_path / "warehouse.sqlite"),
        **extra,
    }


def test_reports_json_page_charts_and_cli(
    database_settings: Settings, unique: str, tmp_path: Path
) -> None:
    from mpp_analytics.service import WarehouseSyncer
    from mpp_analytics.web import ReportServer

    work = workload(unique, messages=120)
    with psycopg.connect(database_settings.postgres.conninfo(), autocommit=True) as conn:
        for batch in work.batches(50):
            write(conn, batch)
        top = analytics.campaign_report(conn, 1)[0]
    settings = database_settings.model_copy(
        update={
            "analytics": database_settings.analytics.model_copy(update={"report_port": 0}),
            "warehouse": database_settings.warehouse.model_copy(
                update={"sqlite_path": tmp_path / "warehouse.sqlite"}
            ),
        }
    )
    server = ReportServer(settings, WarehouseSyncer(settings)).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, _, body = get(f"{base}/api/campaigns?limit=3")
        campaigns = json.loads(body)
        assert status == 200 and len(campaigns) == 3
        assert campaigns[0]["campaign_id"] == top["campaign_id"]
        assert campaigns[0]["clicks"] == top["clicks"] and campaigns[0]["ctr"] == top["ctr"]
        status, _, body = get(f"{base}/api/activity?since=2026-11-21")
        activity = json.loads(body)
        assert status == 200 and activity["totals"][0]["day"] == "2026-11-21"
        daily = json.loads(get(f"{base}/api/campaigns/{top['campaign_id']}/daily")[2])
        assert sum(d["impressions"] for d in daily) == top["impressions"]
        assert get(f"{base}/api/users/{unique}-nobody")[0] == 404
        user = json.loads(get(f"{base}/api/users/{unique}-u7")[2])
        assert user["messages"] > 0 and user["first_seen"].endswith("+00:00")
        assert get(f"{base}/api/activity?since=yesterday")[0] == 422
        for chart in ("campaigns.png", "activity.png"):
            status, kind, png = get(f"{base}/charts/{chart}")
            assert status == 200 and kind == "image/png" and png.startswith(PNG)
            assert len(png) > 10_000
        status, kind, page = get(f"{base}/")
        assert status == 200 and kind.startswith("text/html")
        assert top["campaign_id"].encode() in page and b"/charts/activity.png" in page
        status, report = post(f"{base}/api/warehouse/sync")
        assert status == 200 and report["facts"]["message_facts"] > 0
        assert report["warehouse"].startswith("sqlite:")
    finally:
        server.stop()

    # The CLI as operators run it: its own process (it configures logging for itself).
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MPP_")},
        **environment(settings, tmp_path),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mpp.cli", "analytics", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = cli("report", "--json", "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["campaigns"][0]["campaign_id"] == top["campaign_id"]
    result = cli("charts", "--out", str(tmp_path / "charts"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "charts" / "campaigns.png").read_bytes().startswith(PNG)
    assert 'src="activity.png' in (tmp_path / "charts" / "index.html").read_text()
    result = cli("sync")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["aggregates"]["campaign_performance"] == 5
    result = cli("erase", f"{unique}-u7")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["warehouse_pending"] is False
    assert cli("user", f"{unique}-u7").returncode == 1


def test_service_process_becomes_ready_serves_reports_and_stops_on_sigterm(
    database_settings: Settings, unique: str, tmp_path: Path
) -> None:
    assert SERVICES["analytics"] == ("mpp_analytics", 18085)
    health, reports = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MPP_")},
        **environment(
            database_settings,
            tmp_path,
            MPP_HTTP__PORT=str(health),
            MPP_ANALYTICS__REPORT_PORT=str(reports),
            MPP_ANALYTICS__WAREHOUSE_SYNC_S="1",
            MPP_LOG_FORMAT="json",
        ),
    }
    log = (tmp_path / "analytics.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "mpp_analytics"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while get(f"http://127.0.0.1:{health}/readyz", 2)[0] != 200 if _up(health) else True:
            assert process.poll() is None, (tmp_path / "analytics.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready within 60 s"
            time.sleep(0.25)
        ready_s = time.monotonic() - started
        work = workload(unique, messages=60, erase=0)
        produce(database_settings, as_records(unique, work))
        messages = len(work.final_facts()[0])
        deadline = time.monotonic() + 60
        while True:
            summary = json.loads(get(f"http://127.0.0.1:{reports}/api/summary")[2])
            if summary["messages"] == messages:
                break
            assert time.monotonic() < deadline, summary
            time.sleep(0.25)
        # The scheduled sync (every second here) reaches the SQLite warehouse.
        deadline = time.monotonic() + 30
        while b"warehouse_synced" not in (tmp_path / "analytics.log").read_bytes():
            assert time.monotonic() < deadline, "no warehouse sync within 30 s"
            time.sleep(0.25)
        metrics = get(f"http://127.0.0.1:{health}/metrics")[2]
        assert b"mpp_analytics_facts_inserted_total" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
    # Start to ready (consumer assigned, PostgreSQL answering): well within the stack's wait.
    assert ready_s < 45


def _up(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
