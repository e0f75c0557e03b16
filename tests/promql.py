"""What the alert rules and the dashboard ask Prometheus: their expressions and the metric
names in them.

A small reader, not a PromQL parser: it removes what is not a metric name (strings, label
matchers, ranges, the label lists of by/without/on/ignoring/group_*) and keeps the identifiers
that are not a function's or an operator's. Enough for the expressions this project writes,
which tests/unit/test_metrics_names.py checks against what the services export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "helm" / "mpp" / "files" / "alerts.yaml"
DASHBOARD = REPO / "helm" / "mpp" / "files" / "dashboard.json"

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "Inf", "NaN"}
)
# The exposition's series of a histogram (or summary) are named after it with these.
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (a histogram's series named as such)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    return {m for m in _IDENTIFIER.findall(text) if m not in _KEYWORDS}


def base_name(series: str) -> str:
    """A histogram's metric name from the name of one of its series."""
    for suffix in SERIES_SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    """Every rule of the rule file, in order."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs(path: Path = DASHBOARD) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard, rows' panels included."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield panel.get("title", ""), target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(path.read_text())["panels"])
