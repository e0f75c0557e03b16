"""mpp.pipeline.free_port: the ports it hands out to a run's services never repeat."""

from __future__ import annotations

import socket

from mpp.pipeline import free_port


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
