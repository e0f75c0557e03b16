"""Addresses: which hosts are this machine's, and host:port parsing (shared by the settings
and the local stack)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """True when ``host`` names this machine's loopback interface."""
    host = host.strip("[]")
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port``, ``scheme://host:port/...`` or a bare host into (host, port)."""
    if "://" not in address:
        address = "tcp://" + address
    parts = urlsplit(address)
    return parts.hostname or "127.0.0.1", parts.port or default_port
