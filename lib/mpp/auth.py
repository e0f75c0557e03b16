"""API keys of the front doors: who is calling, what the key may do, how often.

Every door (the recommender's HTTP and gRPC APIs, the analytics reports) asks one question
before it reads a request's body: :meth:`KeyRing.authorize` with the key the caller presented
and the scope the request needs. The answer is a :class:`Caller` or a :class:`Denial` (401: no
or unknown key, 403: the key lacks the scope, 429: the key is over its rate limit).

Keys are random (``mpp keys new``: 256 bits), so the configuration keeps only their SHA-256
(``MPP_AUTH__KEYS``): a leaked configuration gives no key, and a salt or a slow hash would add
nothing to a key that cannot be guessed. A presented key is hashed and compared with every
configured digest in constant time, so timing tells nothing about which one nearly matched.

Rate limits are token buckets per key, kept in the process: with several server processes
(replicas, workers) each enforces its own, so a key may make ``replicas x rate_per_s``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Counter

from mpp.config import SCOPES, ApiKeySpec, AuthSettings, Scope

KEY_PREFIX = "mpp_"

MISSING_KEYS = (
    "authentication is on but no API key is configured: add one to MPP_AUTH__KEYS "
    "(`mpp keys new --name NAME --scopes SCOPES` prints the entry) or set MPP_AUTH__ENABLED=false"
)
NO_KEY = (
    "missing API key: send the header X-API-Key: <key> or Authorization: Bearer <key> "
    "(gRPC: the metadata authorization: Bearer <key>)"
)
BAD_KEY = "invalid API key: no configured key has this SHA-256 (MPP_AUTH__KEYS)"

REFUSED = Counter(
    "mpp_front_door_refused_total",
    "Requests refused before the service looked at them, by door and reason.",
    ["service", "door", "reason"],
)
REASONS = {401: "unauthenticated", 403: "forbidden", 413: "too_large", 429: "rate_limited"}


def new_key() -> str:
    """A new random API key (256 bits, URL-safe)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """The hex SHA-256 of a key: what MPP_AUTH__KEYS keeps."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_entry(
    name: str,
    key: str,
    scopes: Iterable[str],
    rate_per_s: float | None = None,
    burst: int | None = None,
) -> dict[str, Any]:
    """The MPP_AUTH__KEYS entry of ``key`` (validated: a bad name or scope raises ValueError)."""
    entry: dict[str, Any] = {"name": name, "sha256": key_digest(key), "scopes": list(scopes)}
    if rate_per_s is not None:
        entry["rate_per_s"] = rate_per_s
    if burst is not None:
        entry["burst"] = burst
    return ApiKeySpec.model_validate(entry).model_dump(exclude_unset=True)


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, else None."""
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_s``; each request takes one. Thread-safe."""

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at = now
        self._lock = threading.Lock()

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there (none taken)."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
            self._at = max(self._at, now)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate_per_s


@dataclass(frozen=True)
class Caller:
    """Who passed: a configured key's name and scopes (``anonymous`` with auth off)."""

    name: str
    scopes: frozenset[str]


ANONYMOUS = Caller("anonymous", frozenset(SCOPES))


@dataclass(frozen=True)
class Denial:
    """Why a request is refused: the HTTP status (each door maps it to its own codes), a
    message naming the fix, and for 429 the seconds to wait."""

    status: Literal[401, 403, 413, 429]
    message: str
    retry_after_s: float = 0.0

    @property
    def retry_after(self) -> str:
        """Retry-After in whole seconds, at least 1 (HTTP allows no fraction)."""
        return str(max(1, math.ceil(self.retry_after_s)))


class KeyRing:
    """The configured keys, their scopes and rate limits (one per process, shared by its
    doors so that a key's limit counts requests through all of them)."""

    def __init__(self, cfg: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = cfg.enabled
        self._clock = clock
        self._keys: list[tuple[bytes, ApiKeySpec]] = [
            (bytes.fromhex(k.sha256), k) for k in cfg.keys
        ]
        now = clock()
        self._buckets = {k.name: TokenBucket(k.rate_per_s, k.burst, now) for k in cfg.keys}

    def identify(self, presented: str | None) -> ApiKeySpec | Denial:
        """The configured key whose digest is that of ``presented``."""
        if not self._keys:
            return Denial(401, MISSING_KEYS)
        if not presented:
            return Denial(401, NO_KEY)
        digest = hashlib.sha256(presented.encode(errors="surrogateescape")).digest()
        found: ApiKeySpec | None = None
        # Every digest is compared (no early exit), each in constant time.
        for stored, spec in self._keys:
            if hmac.compare_digest(digest, stored):
                found = spec
        return found if found is not None else Denial(401, BAD_KEY)

    def authorize(self, presented: str | None, scope: Scope | None, action: str) -> Caller | Denial:
        """May the holder of ``presented`` do ``action``, which needs ``scope`` (None: any
        valid key)? Takes a token of the key's bucket when it may."""
        if not self.enabled:
            return ANONYMOUS
        spec = self.identify(presented)
        if isinstance(spec, Denial):
            return spec
        scopes = frozenset(spec.scopes)
        if scope is not None and scope not in scopes and "admin" not in scopes:
            return Denial(
                403,
                f"the API key {spec.name!r} may not {action}: that needs the scope {scope} "
                f"(or admin) and the key has {', '.join(sorted(scopes))}",
            )
        wait_s = self._buckets[spec.name].take(self._clock())
        if wait_s > 0:
            return Denial(
                429,
                f"the API key {spec.name!r} is over its rate limit ({spec.rate_per_s:g} "
                f"requests/s, bursts of {spec.burst}, per server process): retry in "
                f"{wait_s:.2f} s",
                retry_after_s=wait_s,
            )
        return Caller(spec.name, scopes)


def refused(door: str, denial: Denial) -> None:
    """Count a refusal (mpp_front_door_refused_total). A door is named ``<service>-<api>``
    (``recommender-grpc``), so its service is known without asking the process."""
    REFUSED.labels(door.rsplit("-", 1)[0], door, REASONS[denial.status]).inc()
