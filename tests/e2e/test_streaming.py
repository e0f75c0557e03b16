"""The streaming path end to end on the real servers (issue #3's acceptance).

Services run as real processes; the checks read Milvus, Neo4j and the DLQ directly.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from mpp.config.addresses import host_port
from mpp.pipeline import STREAMING
from mpp.samples import chitchat_events
from mpp.v1 import events_pb2 as E
from tests.e2e.pipeline import Pipeline, Replay, build_replay, log
from tests.forwarder import Cuttable

# Each test replays thousands of messages through a CPU-bound embedder.
pytestmark = pytest.mark.timeout(1500)


def assert_exact(pipeline: Pipeline, unique_valid: int, users: int) -> None:
    assert pipeline.milvus_count() == unique_valid
    graph = pipeline.graph_counts()
    assert graph == {"users": users, "messages": unique_valid, "sent": unique_valid}


def test_replay_with_duplicates_and_invalid_events_is_exact_and_idempotent(
    pipeline: Pipeline,
) -> None:
    replay = build_replay(
        list(chitchat_events(20_000)), pipeline.run_id, duplicate_share=0.05, invalid_share=0.02
    )
    log(
        f"replay: {len(replay.records)} records, {replay.unique_valid} unique valid, "
        f"{len(replay.invalid)} invalid"
    )
    pipeline.start(*STREAMING)
    started = time.monotonic()
    pipeline.produce(replay.records, replay.keys)
    pipeline.wait_drained()
    log(f"first pass drained in {time.monotonic() - started:.0f}s")
    assert_exact(pipeline, replay.unique_valid, replay.users)

    dead = pipeline.dead_letters()
    assert len(dead) == len(replay.invalid)
    assert {d.original_value: E.ErrorCode.Name(d.code) for d in dead} == replay.invalid
    assert all(d.detail and d.source.topic == pipeline.settings.kafka.topics.raw for d in dead)

    # The whole input again: no store count moves. The DLQ is a log, so the same invalid
    # records are appended again: the set of dead-lettered originals does not change.
    pipeline.produce(replay.records, replay.keys)
    pipeline.wait_drained()
    assert_exact(pipeline, replay.unique_valid, replay.users)
    again = pipeline.dead_letters()
    assert len(again) == 2 * len(replay.invalid)
    assert {d.original_value for d in again} == set(replay.invalid)


def _outage(bridge: Cuttable, name: str, down_s: float) -> None:
    """``name`` gone for the pipeline's services for ``down_s`` seconds: refused connections,
    the open ones shut, as when its server stops; the server itself keeps serving the tests
    that run beside this one."""
    bridge.cut()
    log(f"{name} cut off for {down_s:.0f}s")
    time.sleep(down_s)
    bridge.restore()
    log(f"{name} back")


def test_writer_crash_and_store_outages_lose_nothing(pipeline: Pipeline) -> None:
    events = list(chitchat_events(23_000))[20_000:]
    replay = build_replay(events, pipeline.run_id, duplicate_share=0.05, invalid_share=0.0)
    # The services reach Neo4j and Milvus through forwarders that the test cuts; the checks
    # read the servers directly.
    settings = pipeline.settings
    neo4j = Cuttable(host_port(settings.neo4j.uri, 7687))
    milvus = Cuttable(host_port(settings.milvus.uri, 19530))
    pipeline.extra_env["MPP_NEO4J__URI"] = f"bolt://127.0.0.1:{neo4j.port}"
    pipeline.extra_env["MPP_MILVUS__URI"] = f"http://127.0.0.1:{milvus.port}"
    try:
        _crash_and_outages(pipeline, replay, neo4j, milvus)
    finally:
        pipeline.stop()
        neo4j.close()
        milvus.close()
    assert_exact(pipeline, replay.unique_valid, replay.users)
    counts = collections.Counter(d.code for d in pipeline.dead_letters())
    assert sum(counts.values()) == len(replay.invalid)


def _crash_and_outages(
    pipeline: Pipeline, replay: Replay, neo4j: Cuttable, milvus: Cuttable
) -> None:
    pipeline.start(*STREAMING)
    producing = threading.Thread(
        target=pipeline.produce, args=(replay.records, replay.keys), kwargs={"rate": 30.0}
    )
    producing.start()
    time.sleep(8)
    pipeline.kill("graph-writer")
    time.sleep(2)
    pipeline.start("graph-writer")
    time.sleep(5)
    _outage(neo4j, "neo4j", 30)
    time.sleep(5)
    _outage(milvus, "milvus", 30)
    producing.join()
    pipeline.wait_drained()
    # Every service kept running through the outages (the killed one was restarted).
    for name, process in pipeline.processes.items():
        assert process.owned_pid() is not None, f"{name} died"


def test_1024_dimension_path(pipeline: Pipeline) -> None:
    """The packaged 384-dim model lifted by a fixed orthonormal projection into 1024 dims."""
    pipeline.extra_env["MPP_EMBEDDER__PROJECT_TO_DIM"] = "1024"
    replay = build_replay(list(chitchat_events(300)), pipeline.run_id, 0.0, 0.0)
    pipeline.start(*STREAMING)
    pipeline.produce(replay.records, replay.keys)
    pipeline.wait_drained()
    assert_exact(pipeline, replay.unique_valid, replay.users)
    from mpp.stores import milvus_client

    client = milvus_client(pipeline.settings)
    schema = client.describe_collection(pipeline.settings.milvus.messages_collection)
    dims = [f["params"].get("dim") for f in schema["fields"] if f.get("params", {}).get("dim")]
    assert [int(d) for d in dims] == [1024]
