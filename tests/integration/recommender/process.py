"""``python -m mpp_recommender`` as a process on the world of world.py, with API keys of
each scope and two rate-limited ones (the fixture ``service``, through conftest.py; the fuzz
tests import it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mpp.auth import key_entry
from mpp.pipeline import free_port, world_env
from mpp.stack import repo_root

from .world import World

KEY = "test-key-1"  # admin
READ, WRITE, ERASE = "test-reader", "test-writer", "test-eraser"
SLOW_HTTP, SLOW_GRPC = "test-slow-http", "test-slow-grpc"
KEYS = [
    key_entry("other", "other-key", ["admin"]),
    key_entry("admin", KEY, ["admin"]),
    key_entry("reader", READ, ["recommendations:read"]),
    key_entry("writer", WRITE, ["feedback:write"]),
    key_entry("eraser", ERASE, ["users:erase"]),
    # Two requests at once, then one every 2 s.
    key_entry("slow-http", SLOW_HTTP, ["recommendations:read"], rate_per_s=0.5, burst=2),
    key_entry("slow-grpc", SLOW_GRPC, ["recommendations:read"], rate_per_s=0.5, burst=2),
]


@dataclass
class Running:
    http: str
    grpc_target: str
    log: Path
    pid: int


def service_env(world: World, http_port: int, grpc_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPP_")}
    env.update(world_env(world.settings))
    env.update(
        {
            "MPP_HTTP__PORT": str(http_port),
            "MPP_GRPC__PORT": str(grpc_port),
            # The keys' SHA-256 only.
            "MPP_AUTH__KEYS": json.dumps(KEYS),
        }
    )
    return env


@contextmanager
def running_service(world: World, log: Path, **extra_env: str) -> Iterator[Running]:
    """The service as a process until the block ends (SIGTERM, then exit status 0 expected);
    ``extra_env``: more MPP_* variables, e.g. MPP_RECOMMENDER__WORKERS."""
    http_port, grpc_port = free_port(), free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mpp_recommender"],
            env={**service_env(world, http_port, grpc_port), **extra_env},
            cwd=repo_root(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Running(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log, process.pid)
    try:
        # Several workers start side by side; a machine busy with other work slows them.
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{running.http}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no /readyz 200 within 120 s"
            time.sleep(0.2)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(30) == 0, log.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()


@pytest.fixture
def service(world: World, tmp_path: Path) -> Iterator[Running]:
    with running_service(world, tmp_path / "recommender.log") as running:
        yield running


def errors(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["message"] for e in response.json()["errors"]}
