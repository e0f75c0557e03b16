"""Milvus Lite (the milvus-lite wheel from PyPI) as a gRPC server on loopback.

The wheel ships a native ``milvus`` binary; given an address it serves the Milvus gRPC API on
TCP, so several services share one data folder (a second embedded instance on the same folder
would fail on its file lock). We run the binary directly, so that the pid we record is the
server's own.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from mpp.config import host_port
from mpp.stack.base import Progress, Server, StackError

LOG_LEVEL = "ERROR"


def milvus_lite_lib_dir() -> Path:
    # Located without importing milvus_lite: its __init__ needs pkg_resources.
    spec = importlib.util.find_spec("milvus_lite")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("milvus: the milvus-lite package is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


class MilvusServer(Server):
    name = "milvus"
    default_port = 19530

    def address(self) -> tuple[str, int]:
        return host_port(self.settings.milvus.uri, self.default_port)

    def probe(self) -> str | None:
        # A plain gRPC round trip (ShowCollections) with a short deadline: pymilvus' own connect
        # retries for many seconds, which would make status slow when the server is down.
        import grpc
        from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

        host, port = self.address()
        try:
            with grpc.insecure_channel(f"{host}:{port}") as channel:
                stub = milvus_pb2_grpc.MilvusServiceStub(channel)
                stub.ShowCollections(milvus_pb2.ShowCollectionsRequest(), timeout=2.0)
        except grpc.RpcError as exc:
            return f"gRPC {exc.code().name}"
        return None

    def install(self, progress: Progress) -> None:
        binary = milvus_lite_lib_dir() / "milvus"
        if not binary.exists():
            raise StackError(f"milvus: {binary} is missing; reinstall the milvus-lite package")

    def command(self) -> Sequence[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host, port = self.address()
        binary = milvus_lite_lib_dir() / "milvus"
        return [
            str(binary),
            str((self.data_dir / "milvus.db").resolve()),
            f"{host}:{port}",
            LOG_LEVEL,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        lib = str(milvus_lite_lib_dir())
        env["LD_LIBRARY_PATH"] = lib + (
            ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""
        )
        return env
