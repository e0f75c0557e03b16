"""Helpers of the store tests, shared with the other integration tests that write to the
stores: Milvus collections of a test's own, rows for Milvus and Neo4j, polling until Milvus
Lite shows a write, and a Milvus Lite server of a test's own to stop and start."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mpp.config import Settings
from mpp.stack.milvus import milvus_lite_lib_dir
from mpp.stores import milvus_client
from mpp.stores.graph_rows import CampaignEdge, MessageNode
from mpp.stores.vector_rows import MessageVector

DIM = 384


def milvus_settings(settings: Settings, unique: str, **milvus: object) -> Settings:
    """The stack's settings with collections of this test's own."""
    cfg = settings.milvus.model_copy(
        update={
            "messages_collection": f"t_{unique}_messages",
            "campaigns_collection": f"t_{unique}_campaigns",
            **milvus,
        }
    )
    return settings.model_copy(update={"milvus": cfg})


def drop_collections(settings: Settings) -> None:
    client = milvus_client(settings)
    for name in (settings.milvus.messages_collection, settings.milvus.campaigns_collection):
        if client.has_collection(name):
            client.drop_collection(name)


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Milvus Lite shows a re-upserted row as missing for about 10 ms; poll briefly."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def unit_vectors(count: int, dim: int = DIM, seed: int = 7) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def message_rows(count: int, users: int, tag: str, dim: int = DIM) -> list[MessageVector]:
    vectors = unit_vectors(count, dim)
    return [
        MessageVector(
            message_id=f"{tag}-m{i}",
            user_id=f"{tag}-u{i % users}",
            ts_ms=1_780_000_000_000 + i * 1000,
            embedding=vectors[i].tolist(),
            channel="chat",
            top_intent="billing" if i % 2 else "unknown",
            top_intent_score=0.5,
            model="test-model",
        )
        for i in range(count)
    ]


def graph_rows(tag: str, count: int, users: int) -> list[MessageNode]:
    return [
        MessageNode(
            message_id=f"{tag}-m{i}",
            user_id=f"{tag}-u{i % users}",
            ts_ms=1_780_000_000_000 + i,
            text=f"message {i}",
            channel="chat",
            campaigns=(
                CampaignEdge(f"{tag}-c{i % 3}", 0.8, "similarity"),
                CampaignEdge(f"{tag}-c{(i + 1) % 3}", 0.5, "event"),
            )
            if i % 4
            else (),
            intents=((f"{tag}-i{i % 2}", 0.9),),
        )
        for i in range(count)
    ]


# -- a Milvus Lite server of the test's own, to stop and start ------------------------------


def _answers(port: int) -> bool:
    import grpc
    from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = milvus_pb2_grpc.MilvusServiceStub(channel)
            stub.ShowCollections(milvus_pb2.ShowCollectionsRequest(), timeout=1.0)
    except grpc.RpcError:
        return False
    return True


@contextmanager
def private_milvus(data_dir: Path, port: int) -> Iterator[None]:
    """Milvus Lite's server on ``port`` with its data in ``data_dir``, stopped on exit."""
    lib = milvus_lite_lib_dir()
    env = {**os.environ, "LD_LIBRARY_PATH": str(lib)}
    process = subprocess.Popen(
        [str(lib / "milvus"), str(data_dir / "milvus.db"), f"127.0.0.1:{port}", "ERROR"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            assert process.poll() is None, "the private Milvus server exited"
            assert time.monotonic() < deadline, "the private Milvus server did not answer"
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
