"""The analytics reports over HTTP: an HTML page with charts, JSON, PNG charts, sync on demand.

A small FastAPI app (OpenAPI at /docs), served by uvicorn in a thread of the analytics service
on ``MPP_ANALYTICS__REPORT_HOST:MPP_ANALYTICS__REPORT_PORT`` (127.0.0.1:18095), apart from the
worker's /healthz, /readyz, /metrics port. Every request reads PostgreSQL's serving tables
with a connection of its own; the numbers are those of the last committed batch.

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
import threading
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date
from typing import Annotated, Any

import psycopg
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from mpp import analytics
from mpp.catalog import CAMPAIGN_ID_PATTERN
from mpp.config import Settings
from mpp.logs import get_logger
from mpp.validation import USER_ID_PATTERN
from mpp.warehouse import WarehouseError
from mpp_analytics.charts import activity_chart, campaign_chart
from mpp_analytics.service import WarehouseSyncer

log = get_logger("analytics")

Limit = Annotated[int, Query(ge=1, le=200, description="At most this many campaigns.")]
Since = Annotated[date | None, Query(description="First UTC day (YYYY-MM-DD); all when absent.")]
# Path ids as ingest accepts them: anything else (a newline, a space...) is a 422 before any
# query. pydantic matches these patterns with Rust's regex engine, where $ ends the text.
UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, description="A user id.")]
CampaignId = Annotated[str, Path(pattern=CAMPAIGN_ID_PATTERN, description="A campaign id.")]


def connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A PostgreSQL connection for one request (503 while PostgreSQL is away)."""
    settings: Settings = request.app.state.settings
    try:
        conn = psycopg.connect(settings.postgres.conninfo(), connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise HTTPException(503, f"postgres unavailable: {str(exc).strip()[:200]}") from exc
    with conn:
        yield conn


Conn = Annotated[psycopg.Connection[Any], Depends(connection)]


def create_app(settings: Settings, syncer: WarehouseSyncer | None = None) -> FastAPI:
    app = FastAPI(
        title="mpp analytics",
        description="Engagement, campaign performance and daily activity.",
        version="1",
    )
    app.state.settings = settings

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
    campaign_columns = [
        "campaign_id",
        "messages",
        "impressions",
        "clicks",
        "conversions",
        "dismissals",
        "ctr",
        "conversion_rate",
    ]
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
        config = uvicorn.Config(
            create_app(settings, syncer),
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
