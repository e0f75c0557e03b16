"""The chart on the real local cluster: events through pods, an upgrade and a pod deleted while
events flow, then an uninstall that leaves nothing.

The cluster (`mpp cluster up`) and the images (`mpp images build --import`) are made by the
test command before pytest; the release here has topics, consumer groups, Milvus collections
and a PostgreSQL database of its own, so it shares nothing with the other tests. The tests run
in file order: each one's events add to the counts the next one checks.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
import pytest

from mpp.config import Settings
from mpp.samples import chitchat_events
from mpp.stack import stack_dir
from mpp.stack.deploy import Deployment
from mpp.stack.services import SERVICES, local_api_key
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG
from tests.cluster.conftest import isolated_release
from tests.e2e.pipeline import Pipeline, Replay, build_replay, log

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

NAMESPACE = "mpp-test"
RELEASE = "mpp"
WRITERS = ("vector-writer", "graph-writer", "analytics")


@dataclass
class Release:
    deployment: Deployment
    pipeline: Pipeline
    tag: str
    sent: list[Replay] = field(default_factory=list)

    def produce(self, replay: Replay, rate: float = 0) -> None:
        self.pipeline.produce(replay.records, replay.keys, rate=rate)
        self.sent.append(replay)

    def expected(self) -> tuple[int, int]:
        """Unique valid messages and users sent so far (replays never share a message, but
        their users may be the same)."""
        users = {
            json.loads(record)["user_id"]
            for replay in self.sent
            for record in replay.records
            if record not in replay.invalid
        }
        return sum(r.unique_valid for r in self.sent), len(users)

    def pods(self, component: str | None = None) -> list[dict[str, Any]]:
        """The release's pods (of one component), leaving out those being deleted."""
        return [
            pod
            for pod in self.deployment.pods()
            if "deletionTimestamp" not in pod["metadata"]
            and component in (None, pod["metadata"]["labels"].get("app.kubernetes.io/component"))
        ]

    def service_ip(self, component: str) -> str:
        return self.deployment.kubectl(
            "get", "service", f"{RELEASE}-{component}", "-n", NAMESPACE,
            "-o", "jsonpath={.spec.clusterIP}",
        ).strip()  # fmt: skip


def message_facts(settings: Settings, prefix: str) -> tuple[int, int]:
    """Rows and distinct message ids that analytics wrote for the run's users."""
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM message_facts WHERE user_id LIKE %s",
            (prefix + "-%",),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def assert_exactly_once(release: Release) -> None:
    unique_valid, users = release.expected()
    pipeline = release.pipeline
    pipeline.wait_drained(timeout_s=900)
    assert pipeline.milvus_count() == unique_valid
    assert pipeline.graph_counts() == {
        "users": users,
        "messages": unique_valid,
        "sent": unique_valid,
    }
    assert message_facts(pipeline.settings, pipeline.run_id) == (unique_valid, unique_valid)
    log(f"exactly once through the pods: {unique_valid} messages from {users} users")


def replay_slice(release: Release, start: int, count: int) -> Replay:
    events = list(chitchat_events(start + count))[start:]
    return build_replay(
        events, release.pipeline.run_id, duplicate_share=0.05, invalid_share=0.02, seed=start
    )


@pytest.fixture(scope="module")
def release(database_settings_module: Settings, module_unique: str) -> Iterator[Release]:
    from mpp.stack.images import image_ref

    settings, overrides = isolated_release(database_settings_module, module_unique)
    deployment = Deployment(settings, release=RELEASE, namespace=NAMESPACE, overrides=overrides)
    deployment.require_cluster()
    tag = image_ref("ingest").rsplit(":", 1)[1]
    pipeline = Pipeline(settings=settings, run_id=f"k8s{module_unique}", home=stack_dir(settings))
    started = time.monotonic()
    deployment.up(log, tag)
    log(f"helm install with the migration Job: {time.monotonic() - started:.1f}s")
    try:
        yield Release(deployment, pipeline, tag)
    finally:
        if deployment.down(log):
            log("uninstalled after the tests (a test failed before the uninstall test)")
        deployment.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", timeout=300)
        pipeline.cleanup()


def test_every_pod_runs_restricted_from_its_own_image(release: Release) -> None:
    pods = release.deployment.pods()
    by_component = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in pods}
    assert set(SERVICES) <= set(by_component), sorted(by_component)
    namespace = json.loads(release.deployment.kubectl("get", "namespace", NAMESPACE, "-o", "json"))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for service in SERVICES:
        pod = by_component[service]
        assert pod["status"]["phase"] == "Running", (service, pod["status"])
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True", (service, pod["status"]["conditions"])
        (container,) = pod["spec"]["containers"]
        assert container["image"] == f"localhost/mpp/{service}:{release.tag}"
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    # The migration Job ran (the topics it creates exist, the schema is there) and is gone.
    jobs = json.loads(release.deployment.kubectl("get", "jobs", "-n", NAMESPACE, "-o", "json"))
    assert jobs["items"] == []


def test_events_land_exactly_once_through_the_pods(release: Release) -> None:
    replay = replay_slice(release, 0, 400)
    log(f"producing {len(replay.records)} records ({replay.unique_valid} unique valid)")
    started = time.monotonic()
    release.produce(replay)
    assert_exactly_once(release)
    log(f"drained through the pods in {time.monotonic() - started:.0f}s")


def test_recommend_over_grpc_and_http_through_the_service(release: Release) -> None:
    user = f"{release.pipeline.run_id}-traveller"
    now = int(time.time() * 1000)
    texts = [
        "we are flying to Lisbon for a beach holiday next month",
        "looking for cheap flights and a hotel near the beach",
        "our summer vacation trip: which travel insurance do you recommend?",
    ]
    records = [
        json.dumps({"user_id": user, "message": t, "timestamp": now - 60_000 * (3 - i)}).encode()
        for i, t in enumerate(texts)
    ]
    release.produce(
        Replay(records, [user.encode()] * len(records), len(records), invalid={}, users=1)
    )
    release.pipeline.wait_drained(timeout_s=300)
    key = local_api_key(stack_dir(release.pipeline.settings))
    address = release.service_ip("recommender")
    channel = grpc.insecure_channel(f"{address}:50051")
    stub = RG.RecommenderStub(channel)
    answer = stub.Recommend(
        R.RecommendRequest(user_id=user, limit=5),
        metadata=[("authorization", f"Bearer {key}")],
        timeout=10,
    )
    assert answer.items, answer
    assert all(item.reasons for item in answer.items)
    assert answer.items[0].campaign_id == "travel-summer", answer
    request = urllib.request.Request(
        f"http://{address}:18086/recommendations/{user}?limit=5", headers={"X-API-Key": key}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    assert [i["campaign_id"] for i in body["items"]] == [i.campaign_id for i in answer.items]
    with pytest.raises(grpc.RpcError) as refused:
        stub.Recommend(R.RecommendRequest(user_id=user, limit=5), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_helm_upgrade_rolls_every_deployment_while_events_flow(release: Release) -> None:
    before = {p["metadata"]["uid"] for p in release.pods()}
    replay = replay_slice(release, 400, 400)
    producing = threading.Thread(target=release.produce, args=(replay,), kwargs={"rate": 20.0})
    producing.start()
    time.sleep(3)
    release.deployment.overrides["config"]["logLevel"] = "WARNING"  # a changed value
    started = time.monotonic()
    release.deployment.up(log, release.tag)
    log(f"helm upgrade rolled out in {time.monotonic() - started:.0f}s")
    producing.join()
    after = {p["metadata"]["uid"] for p in release.pods()}
    assert len(after) == len(SERVICES) and not before & after, "not every pod was replaced"
    assert_exactly_once(release)


@pytest.mark.parametrize("writer", WRITERS)
def test_a_writer_pod_deleted_mid_stream_loses_nothing(release: Release, writer: str) -> None:
    (old,) = release.pods(writer)
    start = {"vector-writer": 800, "graph-writer": 1100, "analytics": 1400}[writer]
    replay = replay_slice(release, start, 300)
    producing = threading.Thread(target=release.produce, args=(replay,), kwargs={"rate": 30.0})
    producing.start()
    time.sleep(4)
    release.deployment.kubectl(
        "delete", "pod", old["metadata"]["name"], "-n", NAMESPACE, "--wait=false"
    )
    log(f"{writer}: deleted pod {old['metadata']['name']} mid-stream")
    producing.join()
    release.deployment.kubectl(
        "rollout", "status", f"deployment/{RELEASE}-{writer}", "-n", NAMESPACE,
        "--timeout=300s", timeout=320,
    )  # fmt: skip
    (new,) = release.pods(writer)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    assert_exactly_once(release)


def test_uninstall_leaves_none_of_the_releases_objects(release: Release) -> None:
    kinds = (
        "deployments,replicasets,pods,services,endpointslices,configmaps,secrets,"
        "serviceaccounts,jobs,poddisruptionbudgets,horizontalpodautoscalers,networkpolicies"
    )
    labelled = f"app.kubernetes.io/instance={RELEASE}"
    assert release.deployment.kubectl("get", kinds, "-n", NAMESPACE, "-l", labelled, "-o", "name")
    assert release.deployment.down(log)
    left = release.deployment.kubectl("get", kinds, "-n", NAMESPACE, "-o", "name").split()
    # What every namespace has of its own: the default ServiceAccount and the CA bundle.
    assert sorted(left) == ["configmap/kube-root-ca.crt", "serviceaccount/default"], left
