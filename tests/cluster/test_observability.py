"""#16 in the local cluster: a real Jaeger and a real Prometheus beside a release of the chart.

`mpp deploy observability up` (mpp.stack.cluster_observability) puts both into a restricted
namespace of this module's own; the release goes there with tracing on (the chart's
``tracing`` values pointing at that Jaeger, as `mpp deploy up --tracing` does), on topics,
consumer groups, Milvus collections and a database of the module's own. A few chat events go
through its pods; then, read from this machine at the Services' ClusterIPs:
- Prometheus found every service's pod through the Kubernetes API and scrapes it (``up`` is 1
  for each), and ingest's consumed counter equals the events sent;
- Jaeger holds an event's trace with spans from ingest, the embedder, both writers and
  analytics, each exported by its pod over OTLP;
- Prometheus has loaded and evaluates the chart's alert rules.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from mpp.config import Settings
from mpp.samples import chitchat_events
from mpp.stack import repo_root, stack_dir
from mpp.stack.cluster_observability import Observability
from mpp.stack.cluster_observability_objects import (
    JAEGER,
    PROMETHEUS,
    PROMETHEUS_PORT,
    QUERY_PORT,
    tracing_values,
)
from mpp.stack.deploy import Deployment, deep_merge
from mpp.stack.prometheus import ALERT_RULES
from mpp.stack.services import SERVICES
from tests.cluster.conftest import isolated_release
from tests.e2e.pipeline import Pipeline, build_replay, log
from tests.observability import Jaeger, Prometheus
from tests.otel import clean_tracing

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

STREAM = ("ingest", "embedder", "vector-writer", "graph-writer", "analytics")
EVENTS = 20


@dataclass
class Observed:
    namespace: str
    release: Deployment
    jaeger: Jaeger
    prometheus: Prometheus
    raw_topic: str
    sent: int  # records produced onto it


@pytest.fixture(scope="module")
def observed(database_settings_module: Settings, module_unique: str) -> Iterator[Observed]:
    from mpp.stack.images import image_ref

    namespace = f"mpp-obs-{module_unique}"
    settings, overrides = isolated_release(database_settings_module, module_unique)
    observability = Observability(settings, namespace)
    release = Deployment(
        settings, namespace=namespace, overrides=deep_merge(overrides, tracing_values())
    )
    release.require_cluster()
    pipeline = Pipeline(settings=settings, run_id=f"obs{module_unique}", home=stack_dir(settings))
    clients: list[Jaeger | Prometheus] = []
    try:
        started = time.monotonic()
        observability.up(log)
        log(f"Jaeger and Prometheus ready in {time.monotonic() - started:.0f}s")
        started = time.monotonic()
        release.up(log, image_ref("ingest").rsplit(":", 1)[1])
        log(f"release with tracing on ready in {time.monotonic() - started:.0f}s")
        jaeger = Jaeger(f"http://{observability.service_ip(JAEGER)}:{QUERY_PORT}")
        prometheus = Prometheus(f"http://{observability.service_ip(PROMETHEUS)}:{PROMETHEUS_PORT}")
        clients += [jaeger, prometheus]
        replay = build_replay(
            list(chitchat_events(EVENTS)), pipeline.run_id, duplicate_share=0, invalid_share=0
        )
        # Produced untraced, whatever an earlier test left: each event's trace starts in ingest.
        with pytest.MonkeyPatch.context() as patch, clean_tracing(patch):
            pipeline.produce(replay.records, replay.keys)
        pipeline.wait_drained(timeout_s=300)
        log(f"{len(replay.records)} events through the pods")
        raw_topic = settings.kafka.topics.raw
        yield Observed(namespace, release, jaeger, prometheus, raw_topic, len(replay.records))
    finally:
        for client in clients:
            client.close()
        release.down(log)
        # Jaeger and Prometheus go with the namespace; their images stay for the next run.
        release.kubectl("delete", "namespace", namespace, "--ignore-not-found", timeout=300)
        shutil.rmtree(release.batch_data, ignore_errors=True)
        pipeline.cleanup()


def service_pods(release: Deployment) -> dict[str, str]:
    """The release's running service pods: name -> component."""
    found = {}
    for pod in release.pods():
        component = pod["metadata"]["labels"].get("app.kubernetes.io/component")
        if component in SERVICES and "deletionTimestamp" not in pod["metadata"]:
            found[pod["metadata"]["name"]] = component
    return found


def test_prometheus_scrapes_every_services_pod(observed: Observed) -> None:
    pods = service_pods(observed.release)
    assert sorted(pods.values()) == sorted(SERVICES), pods  # one replica each here
    expr = f'up{{namespace="{observed.namespace}"}}'
    deadline = time.monotonic() + 90
    series: list[dict[str, Any]] = []
    up: dict[str, float] = {}
    while time.monotonic() < deadline:
        series = observed.prometheus.query(expr)
        up = {s["metric"].get("pod", "?"): float(s["value"][1]) for s in series}
        if all(up.get(pod) == 1.0 for pod in pods):
            break
        time.sleep(1)
    assert {pod: up.get(pod) for pod in pods} == dict.fromkeys(pods, 1.0), up
    # Only the release's service pods are targets (not Jaeger, not Prometheus, not the Job).
    assert set(up) == set(pods), up
    labelled = {s["metric"]["pod"]: s["metric"]["component"] for s in series}
    assert labelled == pods


def test_ingests_consumed_counter_equals_the_events_sent(observed: Observed) -> None:
    expr = f'sum(mpp_records_consumed_total{{namespace="{observed.namespace}", service="ingest"}})'
    consumed = observed.prometheus.wait_for(expr, lambda v: v >= observed.sent, timeout_s=90)
    assert consumed == observed.sent
    # Every record read from the raw topic, and nothing else.
    topics = observed.prometheus.query(
        f'mpp_records_consumed_total{{namespace="{observed.namespace}", service="ingest"}}'
    )
    assert {s["metric"]["topic"] for s in topics} == {observed.raw_topic}


def processing_services(trace: dict[str, Any]) -> list[str]:
    """The services of the trace's record spans (``<topic> process``), one entry per span."""
    processes = trace["processes"]
    return sorted(
        processes[span["processID"]]["serviceName"]
        for span in trace["spans"]
        if span["operationName"].endswith(" process")
    )


def test_jaeger_holds_an_events_trace_across_the_five_services(observed: Observed) -> None:
    # ingest writes no batch spans: each of its traces is an event's, which starts there (the
    # events were produced untraced). One record span per service: the event went through each
    # pod once.
    trace = observed.jaeger.wait_for_trace(
        lambda t: processing_services(t) == sorted(STREAM), "ingest", timeout_s=120
    )
    assert len({span["traceID"] for span in trace["spans"]}) == 1
    assert set(STREAM) <= set(observed.jaeger.services())


def test_prometheus_loaded_and_evaluates_the_charts_alert_rules(observed: Observed) -> None:
    rules = yaml.safe_load((repo_root() / ALERT_RULES).read_text())
    expected = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    assert expected
    deadline = time.monotonic() + 60
    loaded: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        loaded = observed.prometheus.alert_rules()
        if loaded and all(rule.get("health") == "ok" for rule in loaded):
            break
        time.sleep(1)
    assert {rule["name"] for rule in loaded} == expected
    health = {rule["name"]: (rule.get("health"), rule.get("lastError")) for rule in loaded}
    assert all(state == "ok" for state, _ in health.values()), health
