"""API keys for both front doors: HTTP ``X-API-Key`` or ``Authorization: Bearer <key>``, gRPC
metadata ``authorization: Bearer <key>``. Keys are compared in constant time."""

from __future__ import annotations

import hmac

from mpp.config import RecommenderSettings

MISSING_KEYS = (
    "authentication is on but no API key is configured: set MPP_RECOMMENDER__API_KEYS "
    '(a JSON list, e.g. ["key1"]) or MPP_RECOMMENDER__AUTH_ENABLED=false'
)


class ApiKeys:
    def __init__(self, cfg: RecommenderSettings) -> None:
        self.enabled = cfg.auth_enabled
        self._keys = [k.get_secret_value().encode() for k in cfg.api_keys]

    def check(self, presented: str | None) -> str | None:
        """None when the caller may proceed, else what is wrong and how to fix it."""
        if not self.enabled:
            return None
        if not self._keys:
            return MISSING_KEYS
        if not presented:
            return (
                "missing API key: send the header X-API-Key: <key> (HTTP) or the metadata "
                "authorization: Bearer <key> (gRPC)"
            )
        candidate = presented.encode()
        # Compare with every key, so that timing tells nothing about which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return None if matched else "invalid API key"


def bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None
