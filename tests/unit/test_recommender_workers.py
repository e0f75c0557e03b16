"""mpp_recommender.workers without servers: how many workers ``0`` means (affinity and the
cgroup's CPU quota), and the shared ports (SO_REUSEPORT: several listeners on one port, but not
beside a program that listens there without it)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from mpp_recommender.workers import cpu_limit, shared_socket, worker_count

CPUS = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", CPUS),  # no quota: the affinity
        ("50000 100000\n", 1),  # half a CPU: one worker
        ("150000 100000\n", min(CPUS, 2)),  # 1.5 CPUs, rounded up
        (f"{(CPUS + 8) * 100000} 100000\n", CPUS),  # a quota above the affinity
        ("garbage\n", CPUS),
    ],
)
def test_zero_workers_means_one_per_usable_cpu(tmp_path: Path, cpu_max: str, expected: int) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert cpu_limit(path) == expected
    assert worker_count(0, path) == expected
    assert worker_count(3, path) == 3  # a configured count is kept


def test_no_cgroup_file_means_the_affinity(tmp_path: Path) -> None:
    assert cpu_limit(tmp_path / "absent") == CPUS


def test_workers_share_a_port_that_a_plain_listener_keeps_to_itself() -> None:
    held = shared_socket("127.0.0.1", 0)  # the supervisor's: bound, not listening
    port = held.getsockname()[1]
    first, second = shared_socket("127.0.0.1", port), shared_socket("127.0.0.1", port)
    first.listen(8)
    second.listen(8)
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    for sock in (held, first, second):
        sock.close()

    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen(8)
    with pytest.raises(OSError):
        shared_socket("127.0.0.1", plain.getsockname()[1])
    plain.close()


def test_a_second_supervisor_cannot_claim_ports_already_shared() -> None:
    """Another service of the same user on the same port: refused, not joined (both would
    otherwise answer a share of the connections)."""
    held = shared_socket("127.0.0.1", 0, claim=True)
    port = held.getsockname()[1]
    worker = shared_socket("127.0.0.1", port)  # the first service's workers still join it
    worker.listen(8)
    with pytest.raises(OSError):
        shared_socket("127.0.0.1", port, claim=True)
    for sock in (held, worker):
        sock.close()
    # Free again: claimed.
    shared_socket("127.0.0.1", port, claim=True).close()
