"""The stack manager against real server processes, on ports of its own."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mpp.config import Settings
from mpp.stack import Stack, StackError, State
from mpp.stack.base import pid_alive
from mpp.stack.redis import RedisServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_stack(tmp_path: Path, port: int, timeout_s: float = 30) -> Stack:
    settings = Settings.model_validate(
        {
            "redis": {"url": f"redis://127.0.0.1:{port}/0"},
            "stack": {"dir": tmp_path / "stack", "ready_timeout_s": timeout_s},
        }
    )
    return Stack(settings, only=("redis",))


def test_up_starts_reuses_and_down_stops_only_its_own(tmp_path: Path) -> None:
    stack = _redis_stack(tmp_path, _free_port())
    messages: list[str] = []
    (status,) = stack.up(messages.append)
    assert status.state == State.OURS and status.pid
    assert (tmp_path / "stack" / "redis" / "redis.log").exists()

    messages.clear()
    (again,) = stack.up(messages.append)
    assert again.pid == status.pid
    assert any("reusing" in m for m in messages)

    assert stack.down(messages.append) == ["redis"]
    (after,) = stack.status()
    assert after.state == State.DOWN
    assert stack.down(messages.append) == []


def test_a_server_started_elsewhere_is_reused_and_left_running(tmp_path: Path) -> None:
    port = _free_port()
    external = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        stack = _redis_stack(tmp_path, port)
        deadline = time.monotonic() + 10
        while stack.status()[0].state == State.DOWN and time.monotonic() < deadline:
            time.sleep(0.1)
        (status,) = stack.up(lambda _: None)
        assert status.state == State.EXTERNAL
        assert stack.down(lambda _: None) == []
        assert external.poll() is None, "down must not stop a server it did not start"
    finally:
        external.terminate()
        external.wait(10)


def test_a_server_that_dies_at_start_names_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RedisServer, "command", lambda self: ["redis-server", "--port", "nope"])
    stack = _redis_stack(tmp_path, _free_port())
    started = time.monotonic()
    with pytest.raises(StackError) as info:
        stack.up(lambda _: None)
    assert time.monotonic() - started < 20
    log = tmp_path / "stack" / "redis" / "redis.log"
    assert f"see {log}" in str(info.value)
    assert "exited with status" in str(info.value)


def test_a_server_that_never_answers_times_out_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RedisServer, "command", lambda self: ["sleep", "120"])
    stack = _redis_stack(tmp_path, _free_port(), timeout_s=2)
    with pytest.raises(StackError, match=r"not ready .* within the deadline") as info:
        stack.up(lambda _: None)
    assert "redis.log" in str(info.value)
    pid = stack.servers[0].owned_pid()
    assert pid is not None
    assert stack.down(lambda _: None) == ["redis"]
    assert not pid_alive(pid)


def test_a_port_held_by_something_else_is_refused(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        stack = _redis_stack(tmp_path, port, timeout_s=5)
        with pytest.raises(StackError, match="taken by something"):
            stack.up(lambda _: None)


def test_down_ignores_a_recycled_pid(tmp_path: Path) -> None:
    stack = _redis_stack(tmp_path, _free_port())
    server = stack.servers[0]
    server.home.mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        # Our pid file names a live process, but with another start time: not ours.
        server.pid_file.write_text(f"{bystander.pid} 1\n")
        assert stack.down(lambda _: None) == []
        assert bystander.poll() is None
    finally:
        bystander.send_signal(signal.SIGTERM)
        bystander.wait(10)
