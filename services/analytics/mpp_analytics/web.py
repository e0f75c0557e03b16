"""The analytics reports over HTTP: an HTML page with charts, JSON, PNG charts, sync on demand.

A small FastAPI app (OpenAPI at /docs), served by uvicorn in a thread of the analytics service
on ``MPP_ANALYTICS__REPORT_HOST:MPP_ANALYTICS__REPORT_PORT`` (127.0.0.1:18095), apart from the
worker's /healthz, /readyz, /metrics port, on loopback unless configured otherwise (and never
elsewhere with authentication off). Requests read PostgreSQL's serving tables through a few
shared read-only connections (``Connections``); the numbers are those of the last committed
batch.

Every path but the OpenAPI document needs an API key (``mpp.http_guard``, before any body is
read): ``analytics:read`` for the pages, JSON and charts, ``admin`` for the sync. A browser is
asked for it (HTTP Basic: any user name, the key as the password); scripts send ``X-API-Key``
or ``Authorization: Bearer``.

    GET  /                               page: totals, charts, top campaigns, daily activity
    GET  /api/summary                    counts of facts, users, campaigns, first/last day
    GET  /api/campaigns?limit&since      campaign totals (since a UTC day: summed daily rows)
    GET  /api/campaigns/{id}/daily       one campaign per day
    GET  /api/activity?since             messages and active users per day and channel
    GET  /api/users/{user_id}            a user's engagement (404 when unknown or erased)
    GET  /charts/campaigns.png?limit&since
    GET  /charts/activity.png?since
    POST /api/warehouse/sync?full        sync the warehouse now; answers the sync's report
"""

from __future__ import annotations

import html
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date
from typing import Annotated, Any

import psycopg
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mpp import analytics
from mpp.auth import MISSING_KEYS, KeyRing
from mpp.catalog import CAMPAIGN_ID_PATTERN
from mpp.config import Settings, is_loopback
from mpp.http_guard import Guard, Rule
from mpp.logs import get_logger
from mpp.validation import USER_ID_PATTERN
from mpp.warehouse import WarehouseError
from mpp.warehouse.tables import TABLES
from mpp_analytics.charts import activity_chart, campaign_chart
from mpp_analytics.service import WarehouseSyncer

log = get_logger("analytics")

Limit = Annotated[int, Query(ge=1, le=200, description="At most this many campaigns.")]
Since = Annotated[date | None, Query(description="First UTC day (YYYY-MM-DD); all when absent.")]
# Path ids as ingest accepts them: anything else (a newline, a space...) is a 422 before any
# query. pydantic matches these patterns with Rust's regex engine, where $ ends the text.
UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, description="A user id.")]
CampaignId = Annotated[str, Path(pattern=CAMPAIGN_ID_PATTERN, description="A campaign id.")]


# What each path needs (docs/security.md): the sync is an operator's act, the rest reads.
RULES = (Rule("POST", "/api/warehouse/sync", "admin", "sync the warehouse"),)
READ = Rule("*", "/", "analytics:read", "read analytics reports")
# The report pages' share of PostgreSQL: at most this many connections, however many requests.
REPORT_CONNECTIONS = 4


class Connections:
    """At most ``size`` read-only PostgreSQL connections shared by the report requests:
    an idle one is reused, a new one opened only while fewer than ``size`` are open, and a
    request waits ``wait_s`` at most for one (then 503). A connection that broke (PostgreSQL
    restarted) is dropped, so the next request opens a fresh one."""

    def __init__(self, conninfo: str, size: int = REPORT_CONNECTIONS, wait_s: float = 5.0) -> None:
        self._conninfo = conninfo
        self._wait_s = wait_s
        self._slots = threading.BoundedSemaphore(size)
        self._idle: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=self._wait_s):
            raise HTTPException(503, "every report connection is busy: retry shortly")
        try:
            conn = self._take()
            try:
                yield conn
            finally:
                self._give_back(conn)
        finally:
            self._slots.release()

    def _take(self) -> psycopg.Connection[Any]:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            if not conn.closed and not conn.broken:
                return conn
        try:
            # Named, so that pg_stat_activity tells the report pages' connections apart.
            conn = psycopg.connect(
                self._conninfo, connect_timeout=3, application_name="mpp-reports"
            )
        except psycopg.OperationalError as exc:
            raise HTTPException(503, f"postgres unavailable: {str(exc).strip()[:200]}") from exc
        conn.read_only = True
        return conn

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        # End the read transaction, so that the next request sees the latest batch.
        try:
            if not conn.broken:
                conn.rollback()
        except psycopg.Error:
            pass
        if self._closed or conn.closed or conn.broken:
            conn.close()
        else:
            self._idle.put(conn)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A shared PostgreSQL connection for one request (503 while PostgreSQL is away)."""
    connections: Connections = request.app.state.connections
    with connections.connection() as conn:
        yield conn


Conn = Annotated[psycopg.Connection[Any], Depends(connection)]


def create_app(
    settings: Settings, syncer: WarehouseSyncer | None = None, keys: KeyRing | None = None
) -> FastAPI:
    app = FastAPI(
        title="mpp analytics",
        description="Engagement, campaign performance and daily activity.",
        version="1",
        # /api/users/u1%2F is /api/users/u1/ once decoded: a 404, not a redirect.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.connections = Connections(settings.postgres.conninfo())
    app.add_middleware(
        Guard,
        keys=keys or KeyRing(settings.auth),
        max_body_bytes=settings.http.max_body_bytes,
        rules=RULES,
        default=READ,
        # A browser asks for the key (user name: anything; password: the key).
        challenge='Basic realm="mpp analytics", charset="UTF-8"',
        door="analytics-http",
    )

    @app.exception_handler(psycopg.OperationalError)
    def _postgres_away(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"postgres unavailable: {str(exc).strip()[:200]}; retry"}, status_code=503
        )

    @app.get("/api/summary")
    def summary(conn: Conn) -> dict[str, Any]:
        result: dict[str, Any] = analytics.jsonable(analytics.summary(conn))
        return result

    @app.get("/api/campaigns")
    def campaigns(conn: Conn, limit: Limit = 20, since: Since = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = analytics.jsonable(
            analytics.campaign_report(conn, limit, since)
        )
        return rows

    @app.get("/api/campaigns/{campaign_id}/daily")
    def campaign_daily(
        conn: Conn, campaign_id: CampaignId, since: Since = None
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = analytics.jsonable(
            analytics.campaign_daily(conn, [campaign_id], since)
        )
        return rows

    @app.get("/api/activity")
    def activity(conn: Conn, since: Since = None) -> dict[str, Any]:
        return {
            "by_channel": analytics.jsonable(analytics.activity_report(conn, since)),
            "totals": analytics.jsonable(analytics.activity_totals(conn, since)),
        }

    @app.get("/api/users/{user_id}")
    def user(conn: Conn, user_id: UserId) -> dict[str, Any]:
        row = analytics.user_engagement(conn, user_id)
        if row is None:
            raise HTTPException(404, f"no engagement for user {user_id!r}")
        result: dict[str, Any] = analytics.jsonable(row)
        return result

    @app.get("/charts/campaigns.png", response_class=Response)
    def campaigns_png(conn: Conn, limit: Limit = 10, since: Since = None) -> Response:
        rows = analytics.campaign_report(conn, limit, since)
        return Response(campaign_chart(rows), media_type="image/png")

    @app.get("/charts/activity.png", response_class=Response)
    def activity_png(conn: Conn, since: Since = None) -> Response:
        png = activity_chart(
            analytics.activity_report(conn, since), analytics.activity_totals(conn, since)
        )
        return Response(png, media_type="image/png")

    @app.post("/api/warehouse/sync")
    def sync(full: bool = False) -> dict[str, Any]:
        if syncer is None:
            raise HTTPException(501, "this server has no warehouse syncer")
        try:
            report = syncer.sync(full=full)
        except (WarehouseError, psycopg.Error) as exc:
            raise HTTPException(503, f"warehouse sync failed: {str(exc)[:300]}") from exc
        return asdict(report)

    @app.get("/", response_class=HTMLResponse)
    def page(conn: Conn, limit: Limit = 10, since: Since = None) -> HTMLResponse:
        return HTMLResponse(render_page(conn, limit, since))

    return app


def _table(rows: list[dict[str, Any]], columns: list[str], percent: set[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            text = f"{100 * float(value or 0):.1f}%" if column in percent else str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_page(conn: psycopg.Connection[Any], limit: int = 10, since: date | None = None) -> str:
    """The report page: summary, both charts and their numbers."""
    totals = analytics.summary(conn)
    campaigns = analytics.campaign_report(conn, limit, since)
    activity = analytics.activity_totals(conn, since)
    since_query = f"since={since.isoformat()}&" if since else ""
    shown = f", shown since {since}" if since else ""
    days = f"{totals['first_day'] or '-'} to {totals['last_day'] or '-'}{shown}"
    campaign_columns = list(TABLES["campaign_performance"].column_names)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mpp analytics</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f4f4f4; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Analytics</h1>
<p>{totals["messages"]} messages and {totals["feedback_events"]} feedback events from
{totals["users"]} users about {totals["campaigns"]} campaigns, UTC days
{days}.
CTR is clicks / impressions; conversion rate is conversions / clicks.</p>
<h2>Campaign performance</h2>
<img src="/charts/campaigns.png?{since_query}limit={limit}" alt="campaign performance">
{_table(campaigns, campaign_columns, {"ctr", "conversion_rate"})}
<h2>Daily activity</h2>
<img src="/charts/activity.png?{since_query}" alt="daily activity">
{_table(activity, ["day", "messages", "active_users"], set())}
</body></html>"""


class ReportServer:
    """uvicorn serving ``create_app`` in a daemon thread."""

    def __init__(self, settings: Settings, syncer: WarehouseSyncer | None = None) -> None:
        self.settings = settings
        self.app = create_app(settings, syncer)
        config = uvicorn.Config(
            self.app,
            host=settings.analytics.report_host,
            port=settings.analytics.report_port,
            log_config=None,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="reports", daemon=True)

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return 0

    def start(self, timeout_s: float = 10.0) -> ReportServer:
        """Serve; RuntimeError when it may not (open to the network without authentication,
        or production without keys) or cannot (port taken)."""
        auth, host = self.settings.auth, self.settings.analytics.report_host
        if not auth.enabled and not is_loopback(host):
            raise RuntimeError(
                f"the analytics reports would be open to anyone on {host} with authentication "
                "off: set MPP_AUTH__ENABLED=true (and MPP_AUTH__KEYS) or "
                "MPP_ANALYTICS__REPORT_HOST=127.0.0.1"
            )
        if auth.enabled and not auth.keys:
            if self.settings.environment == "production":
                raise RuntimeError(MISSING_KEYS)
            log.warning("no_api_keys", detail=MISSING_KEYS)
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout_s / 0.05)):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.05)
        if not self._server.started:
            raise RuntimeError("the analytics report server did not start (port taken?)")
        log.info("reports_started", port=self.port)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.app.state.connections.close()
