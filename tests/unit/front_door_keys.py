"""The keys the front-door tests use: one per scope, and a slow one (1 request/s, bursts of 2)
whose rate limit the tests reach."""

from __future__ import annotations

from typing import Any

from mpp.auth import key_entry
from mpp.config import AuthSettings

READ, WRITE, ERASE, ADMIN, SLOW = "k-read", "k-write", "k-erase", "k-admin", "k-slow"


def auth(*entries: dict[str, Any], enabled: bool = True) -> AuthSettings:
    return AuthSettings.model_validate({"enabled": enabled, "keys": list(entries)})


KEYS = auth(
    key_entry("reader", READ, ["recommendations:read", "analytics:read"]),
    key_entry("writer", WRITE, ["feedback:write"]),
    key_entry("eraser", ERASE, ["users:erase"]),
    key_entry("ops", ADMIN, ["admin"]),
    key_entry("slow", SLOW, ["recommendations:read"], rate_per_s=1, burst=2),
)
