"""People read the numbers: the HTTP report (JSON, page, PNG charts) behind its keys, the CLI,
and the service run as a process (``python -m mpp_analytics``) as ``mpp services up`` runs it."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from mpp import analytics
from mpp.auth import key_entry
from mpp.config import AuthSettings, Settings
from mpp.pipeline import free_port
from mpp.stack.services import SERVICES

from .workload import as_records, produce, workload, write

PNG = b"\x89PNG\r\n\x1a\n"
READ, ADMIN = "reports-reader", "reports-admin"
KEYS = [
    key_entry("reader", READ, ["analytics:read"]),
    key_entry("ops", ADMIN, ["admin"]),
    key_entry("recommender", "not-for-reports", ["recommendations:read"]),
]


def get(url: str, timeout: float = 10, key: str | None = READ) -> tuple[int, str, bytes]:
    headers = {"X-API-Key": key} if key else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def post(url: str, key: str | None = ADMIN) -> tuple[int, Any]:
    headers = {"X-API-Key": key} if key else {}
    request = urllib.request.Request(url, method="POST", headers=headers)
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
        "MPP_AUTH__KEYS": json.dumps(KEYS),
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
            "auth": AuthSettings.model_validate({"keys": KEYS}),
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
        check_report_doors(f"http://127.0.0.1:{reports}", database_settings, unique)
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


def raw_post(base: str, path: str, headers: list[str], chunks: list[bytes]) -> tuple[float, bytes]:
    """POST ``headers`` then ``chunks`` on a socket of its own; (seconds to the answer's end,
    the answer). The server may close while the body still comes: sending stops there."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        lines = [f"POST {path} HTTP/1.1", "Host: test", *headers]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:
                break
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
        return time.monotonic() - started, answer


def report_connections(settings: Settings) -> set[int]:
    """The backends of the report pages' pooled connections to this test's database."""
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'mpp-reports'",
            (settings.postgres.database,),
        ).fetchall()
    return {row[0] for row in rows}


def check_report_doors(base: str, settings: Settings, unique: str) -> None:
    """The running service's report door: keys, scopes, body limit, whole ids, one pool."""
    status, _, page = get(f"{base}/", key=None)
    assert status == 401 and b"missing API key" in page
    request = urllib.request.Request(f"{base}/")
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.headers["WWW-Authenticate"].startswith('Basic realm="mpp analytics"')
    # What a browser sends once asked: Basic, the key as the password.
    basic = "Basic " + base64.b64encode(f"anyone:{READ}".encode()).decode()
    request = urllib.request.Request(f"{base}/", headers={"Authorization": basic})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and b"<h1>Analytics</h1>" in response.read()
    assert get(f"{base}/charts/activity.png", key="not-for-reports")[0] == 403
    assert get(f"{base}/api/summary", key="wrong")[0] == 401
    status, body = post(f"{base}/api/warehouse/sync", key=READ)
    assert status == 403 and "sync the warehouse" in body["errors"][0]["message"]
    status, body = post(f"{base}/api/warehouse/sync", key=ADMIN)
    assert status == 200 and body["warehouse"].startswith("sqlite:")

    # No key and 74 MB announced: refused before any of it is read.
    waited, answer = raw_post(base, "/api/warehouse/sync", ["Content-Length: 74000000"], [])
    assert answer.startswith(b"HTTP/1.1 401") and waited < 2, (waited, answer[:300])
    # The admin key, 74 MB announced: 413 at once, naming the limit. (No report route reads a
    # body, so a chunked one is never read at all: the recommender's test covers the count.)
    waited, answer = raw_post(
        base, "/api/warehouse/sync", [f"X-API-Key: {ADMIN}", "Content-Length: 74000000"], []
    )
    assert answer.startswith(b"HTTP/1.1 413") and waited < 2, (waited, answer[:300])
    assert b"1048576 bytes" in answer

    # Ids whole: a newline is a 422, an encoded slash a 404 (not a redirect).
    assert get(f"{base}/api/users/{unique}-u7%0A")[0] == 422
    assert get(f"{base}/api/users/{unique}-u7%2F")[0] == 404
    assert get(f"{base}/api/campaigns/c1%2Fx/daily")[0] == 404

    # 16 requests at once, twice: a few pooled connections serve them all, and the second
    # round opens none.
    def burst() -> list[int]:
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(lambda _: get(f"{base}/api/summary")[0], range(16)))

    assert burst() == [200] * 16
    first = report_connections(settings)
    assert burst() == [200] * 16
    assert 1 <= len(first) <= 4 and report_connections(settings) == first
