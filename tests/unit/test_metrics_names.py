"""The metric naming scheme (docs/metrics.md), checked against what the services export.

Every module of every service is imported, so prometheus_client's default registry holds
every metric a service process can export. Then:
- each of them starts with ``mpp_`` and has the ``service`` label (prometheus_client's own
  runtime collectors, process_* and python_*, are the only others);
- every metric an alert rule or the dashboard names (helm/mpp/files/) is one of them;
- every metric docs/metrics.md lists is one of them, and every one of them is listed there.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from tests.promql import alert_rules, base_name, dashboard_exprs, metric_names

REPO = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = (
    "mpp_ingest",
    "mpp_embedder",
    "mpp_vector_writer",
    "mpp_graph_writer",
    "mpp_analytics",
    "mpp_recommender",
)
# prometheus_client registers these by itself: the process's CPU, memory and file
# descriptors, the interpreter and its garbage collector (process_*, python_*).
RUNTIME_COLLECTORS = (ProcessCollector, PlatformCollector, GCCollector)


def _import_services() -> None:
    for name in SERVICE_PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, f"{name}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)


def exported() -> dict[str, MetricWrapperBase]:
    """Every metric the services define, by the name its series carry (a counter's with
    ``_total``, a histogram's without ``_bucket``/``_sum``/``_count``)."""
    _import_services()
    metrics: dict[str, MetricWrapperBase] = {}
    # The registry keeps its collectors privately; a metric with no series yet is visible
    # nowhere else with its label names.
    for collector in set(REGISTRY._collector_to_names):
        if isinstance(collector, RUNTIME_COLLECTORS):
            continue
        assert isinstance(collector, MetricWrapperBase), f"unexpected collector {collector!r}"
        name = collector._name + ("_total" if collector._type == "counter" else "")
        metrics[name] = collector
    return metrics


@pytest.fixture(scope="module")
def metrics() -> dict[str, MetricWrapperBase]:
    return exported()


def test_the_services_export_the_pipeline_and_recommender_metrics(
    metrics: dict[str, MetricWrapperBase],
) -> None:
    # The scheme's fixed names (docs/metrics.md), with their label names in order.
    scheme = {
        "mpp_records_consumed_total": ("service", "topic"),
        "mpp_records_produced_total": ("service", "topic"),
        "mpp_records_dead_lettered_total": ("service", "reason"),
        "mpp_consumer_lag_records": ("service", "topic", "partition"),
        "mpp_batch_duration_seconds": ("service",),
        "mpp_batch_retries_total": ("service", "cause"),
        "mpp_commit_failures_total": ("service",),
        "mpp_store_operations_total": ("service", "store", "operation", "outcome"),
        "mpp_store_operation_duration_seconds": ("service", "store", "operation"),
        "mpp_store_rows_total": ("service", "store", "operation"),
        "mpp_requests_total": ("service", "api", "method", "code"),
        "mpp_request_duration_seconds": ("service", "api", "method"),
        "mpp_cache_requests_total": ("service", "outcome"),
        "mpp_source_calls_total": ("service", "source", "outcome"),
        "mpp_source_duration_seconds": ("service", "source"),
        "mpp_source_degraded_total": ("service", "source", "reason"),
        "mpp_breaker_open": ("service", "source"),
    }
    found = {name: tuple(metrics[name]._labelnames) for name in scheme if name in metrics}
    assert found == scheme


def test_every_metric_is_named_mpp_and_has_the_service_label(
    metrics: dict[str, MetricWrapperBase],
) -> None:
    assert len(metrics) >= 20, sorted(metrics)
    wrong = {
        name: tuple(metric._labelnames)
        for name, metric in metrics.items()
        if not name.startswith("mpp_") or "service" not in metric._labelnames
    }
    assert wrong == {}


def test_units_and_kinds_are_in_the_names(metrics: dict[str, MetricWrapperBase]) -> None:
    """Counters end in _total; histograms measure seconds and say so."""
    for name, metric in metrics.items():
        if metric._type == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        if metric._type == "histogram":
            assert name.endswith("_seconds"), name


def _named(exprs: list[tuple[str, str]]) -> dict[str, set[str]]:
    """metric -> where it is named (alert or panel)."""
    names: dict[str, set[str]] = {}
    for where, expr in exprs:
        found = metric_names(expr)
        assert found, f"{where}: no metric in {expr!r}"
        for series in found:
            names.setdefault(base_name(series), set()).add(where)
    return names


def test_every_metric_an_alert_names_is_exported(metrics: dict[str, MetricWrapperBase]) -> None:
    named = _named([(rule["alert"], rule["expr"]) for rule in alert_rules()])
    assert len(named) >= 8
    unknown = {name: sorted(where) for name, where in named.items() if name not in metrics}
    assert unknown == {}


def test_every_metric_the_dashboard_names_is_exported(
    metrics: dict[str, MetricWrapperBase],
) -> None:
    named = _named(list(dashboard_exprs()))
    assert len(named) >= 15
    unknown = {name: sorted(where) for name, where in named.items() if name not in metrics}
    assert unknown == {}


def test_a_histogram_is_read_through_its_series_only(metrics: dict[str, MetricWrapperBase]) -> None:
    """histogram_quantile needs the _bucket series; naming the histogram itself finds none."""
    exprs = [(r["alert"], r["expr"]) for r in alert_rules()] + list(dashboard_exprs())
    for where, expr in exprs:
        for series in metric_names(expr):
            if metrics.get(series) is not None and metrics[series]._type == "histogram":
                pytest.fail(f"{where} names the histogram {series} instead of its series")


def test_docs_metrics_lists_exactly_the_exported_metrics(
    metrics: dict[str, MetricWrapperBase],
) -> None:
    text = (REPO / "docs" / "metrics.md").read_text()
    # The reference tables' first column: | `mpp_name` | type | labels | meaning |
    listed = set(re.findall(r"^\| `(mpp_[a-z0-9_]+)` \|", text, flags=re.M))
    assert listed == set(metrics), {
        "not documented": sorted(set(metrics) - listed),
        "documented, not exported": sorted(listed - set(metrics)),
    }
