"""``mpp analytics charts``: the analytics service's command on the operators' CLI.

It draws with the service's own chart and page code (mpp_analytics.charts, .web), which the
shared CLI must not import; mpp.cli loads ``register`` through the entry point group
``mpp.cli`` instead. matplotlib is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mpp.clikit import SinceOption, console, parse_since, settings, subgroup


def register(app: typer.Typer) -> None:
    """Add ``charts`` to ``mpp analytics``."""
    subgroup(app, "analytics").command("charts")(analytics_charts)


def analytics_charts(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the PNGs and index.html.")],
    limit: Annotated[int, typer.Option(min=1, help="Campaigns to chart.")] = 10,
    since: SinceOption = None,
) -> None:
    """Write campaigns.png, activity.png and an index.html page that shows them."""
    from mpp import analytics
    from mpp.stores import postgres_connect
    from mpp_analytics.charts import activity_chart, campaign_chart
    from mpp_analytics.web import render_page

    day = parse_since(since)
    out_dir.mkdir(parents=True, exist_ok=True)
    with postgres_connect(settings()) as conn:
        (out_dir / "campaigns.png").write_bytes(
            campaign_chart(analytics.campaign_report(conn, limit, day))
        )
        (out_dir / "activity.png").write_bytes(
            activity_chart(
                analytics.activity_report(conn, day), analytics.activity_totals(conn, day)
            )
        )
        page = render_page(conn, limit, day)
    # The page's image links point at the service's routes; here, at the files beside it.
    page = page.replace('src="/charts/campaigns.png', 'src="campaigns.png').replace(
        'src="/charts/activity.png', 'src="activity.png'
    )
    (out_dir / "index.html").write_text(page)
    console.print(f"wrote {out_dir}/campaigns.png, activity.png and index.html")
