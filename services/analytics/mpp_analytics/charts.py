"""PNG charts of campaign performance and daily activity.

matplotlib's object API without pyplot: no global figure state, so the report server may draw
from several threads at once, and no display is needed.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

from matplotlib.figure import Figure

_COLORS = {
    "messages": "#9aa5b1",
    "impressions": "#4c78a8",
    "clicks": "#f58518",
    "conversions": "#54a24b",
}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _empty(title: str, text: str) -> bytes:
    figure = Figure(figsize=(8, 2.5))
    axis = figure.subplots()
    axis.set_axis_off()
    axis.set_title(title)
    axis.text(0.5, 0.5, text, ha="center", va="center", color="#666")
    return _png(figure)


def campaign_chart(
    campaigns: Sequence[dict[str, Any]], title: str = "Campaign performance"
) -> bytes:
    """Top campaigns: messages, impressions, clicks and conversions (bars), CTR and
    conversion rate (percent, right panel)."""
    if not campaigns:
        return _empty(title, "no campaign activity yet")
    rows = list(reversed(campaigns))  # the first campaign on top
    names = [str(r["campaign_id"]) for r in rows]
    figure = Figure(figsize=(12, 2.2 + 0.55 * len(rows)))
    counts, rates = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    height = 0.2
    for i, metric in enumerate(("messages", "impressions", "clicks", "conversions")):
        positions = [y + (i - 1.5) * height for y in range(len(rows))]
        counts.barh(
            positions, [r[metric] for r in rows], height, label=metric, color=_COLORS[metric]
        )
    counts.set_yticks(range(len(rows)), names)
    counts.set_xlabel("count")
    # Legends below the panels, never over a bar.
    counts.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize="small")
    counts.set_title(title)
    counts.grid(axis="x", alpha=0.3)
    ctr = [100 * float(r["ctr"]) for r in rows]
    cvr = [100 * float(r["conversion_rate"]) for r in rows]
    rates.barh([y + 0.2 for y in range(len(rows))], ctr, 0.4, label="CTR (clicks / impressions)")
    rates.barh(
        [y - 0.2 for y in range(len(rows))],
        cvr,
        0.4,
        label="conversion rate (conversions / clicks)",
        color=_COLORS["conversions"],
    )
    rates.set_yticks(range(len(rows)), [""] * len(rows))
    rates.set_xlabel("percent")
    rates.set_xlim(0, max([*ctr, *cvr, 1.0]) * 1.18)  # room for the labels
    rates.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, fontsize="small")
    rates.grid(axis="x", alpha=0.3)
    for y, (a, b) in enumerate(zip(ctr, cvr, strict=True)):
        rates.text(a, y + 0.2, f" {a:.1f}%", va="center", fontsize="x-small")
        rates.text(b, y - 0.2, f" {b:.1f}%", va="center", fontsize="x-small")
    figure.tight_layout()
    return _png(figure)


def activity_chart(
    activity: Sequence[dict[str, Any]],
    totals: Sequence[dict[str, Any]],
    title: str = "Daily activity",
) -> bytes:
    """Messages per UTC day stacked by channel (bars) and active users over all channels
    (line, right axis)."""
    if not activity and not totals:
        return _empty(title, "no activity yet")
    days = sorted({r["day"] for r in activity} | {r["day"] for r in totals})
    by_channel: dict[str, dict[date, int]] = defaultdict(dict)
    for r in activity:
        by_channel[r["channel"] or "(none)"][r["day"]] = int(r["messages"])
    figure = Figure(figsize=(12, 4.5))
    axis = figure.subplots()
    bottom = [0] * len(days)
    x = list(range(len(days)))
    for channel in sorted(by_channel):
        values = [by_channel[channel].get(d, 0) for d in days]
        axis.bar(x, values, 0.8, bottom=bottom, label=f"messages: {channel}")
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    axis.set_ylabel("messages")
    step = max(1, len(days) // 15)
    axis.set_xticks(x[::step], [d.isoformat() for d in days][::step], rotation=45, ha="right")
    axis.grid(axis="y", alpha=0.3)
    users = axis.twinx()
    active = {r["day"]: int(r["active_users"]) for r in totals}
    users.plot(x, [active.get(d, 0) for d in days], color="black", marker=".", label="active users")
    users.set_ylabel("active users (all channels)")
    users.set_ylim(bottom=0)
    handles, labels = axis.get_legend_handles_labels()
    more, more_labels = users.get_legend_handles_labels()
    axis.legend(
        handles + more,
        labels + more_labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.28),
        ncol=min(6, len(labels) + 1),
        fontsize="small",
    )
    axis.set_title(f"{title} (UTC days)")
    figure.tight_layout()
    return _png(figure)
