"""Redis: cached answers, the last answer (a fallback), and each user's recent session.

Keys (``{u}`` is the user_id):
- ``mpp:rec:{u}``: a hash, field = the requested limit, value = a serialized
  ``RecommendResponse``; expires after ``cache_ttl_s``. A hit is one HGET.
- ``mpp:last:{u}``: the last answer computed with PostgreSQL up, kept ``last_answer_ttl_s``;
  answered only when PostgreSQL is down.
- ``mpp:session:{u}``: a list of the user's newest messages from ``conversations.enriched``
  (JSON: id, time, float32 vector, intents, campaign links), newest first, at most
  ``recent_messages``, expiring ``session_ttl_s`` after the last message.

Freshness: appending to the session and deleting ``mpp:rec:{u}`` happen in one MULTI, and an
answer is stored only if the session's newest entry is still the one it was computed from (a
Lua check-and-set), so an answer computed from an older session never overwrites the deletion.

Redis down or slow is never an error: every call is bounded by ``redis.socket_timeout_s``,
guarded by a circuit breaker, and a failure reads as a miss (``available`` turns False).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import redis
from prometheus_client import Counter

from mpp.config import Settings
from mpp.logs import get_logger
from mpp.stores import redis_client
from mpp_recommender.breaker import CircuitBreaker, State

log = get_logger(__name__)

CACHE_CALLS = Counter(
    "mpp_recommender_cache_total", "Cache lookups by result (hit, miss, error).", ["result"]
)

# Store the answer only if the session head is what the answer was computed from.
_SET_IF_FRESH = """
local head = redis.call('LINDEX', KEYS[2], 0)
if (head == false and ARGV[4] == '') or head == ARGV[4] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
end
return 0
"""


def answer_key(user_id: str) -> str:
    return f"mpp:rec:{user_id}"


def last_key(user_id: str) -> str:
    return f"mpp:last:{user_id}"


def session_key(user_id: str) -> str:
    return f"mpp:session:{user_id}"


def user_keys(user_id: str) -> list[str]:
    """Every key the recommender keeps for the user."""
    return [answer_key(user_id), last_key(user_id), session_key(user_id)]


@dataclass(frozen=True, slots=True)
class SessionMessage:
    """One recent message of the user, as kept in the session."""

    message_id: str
    ts_ms: int
    embedding: np.ndarray
    intents: tuple[tuple[str, float], ...] = ()
    campaigns: tuple[tuple[str, float], ...] = ()

    def encode(self) -> bytes:
        vector = np.asarray(self.embedding, dtype=np.float32).tobytes()
        return json.dumps(
            {
                "m": self.message_id,
                "t": self.ts_ms,
                "e": base64.b64encode(vector).decode(),
                "i": [list(x) for x in self.intents],
                "c": [list(x) for x in self.campaigns],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SessionMessage:
        data = json.loads(raw)
        return cls(
            message_id=str(data["m"]),
            ts_ms=int(data["t"]),
            embedding=np.frombuffer(base64.b64decode(data["e"]), dtype=np.float32),
            intents=tuple((str(n), float(s)) for n, s in data.get("i", [])),
            campaigns=tuple((str(c), float(s)) for c, s in data.get("c", [])),
        )


@dataclass(frozen=True, slots=True)
class Session:
    messages: list[SessionMessage]
    # The raw newest entry ("" when empty), the token for ``store_answer``; None: Redis down.
    head: bytes | None


class RedisCache:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        cfg = settings.recommender
        self._client = client if client is not None else redis_client(settings)
        self._ttl = cfg.cache_ttl_s
        self._last_ttl = cfg.last_answer_ttl_s
        self._session_ttl = cfg.session_ttl_s
        self._session_len = cfg.recent_messages
        self.breaker = CircuitBreaker(
            "redis", cfg.breaker_failures, cfg.breaker_reset_s, on_change=on_change
        )
        self._set_if_fresh = self._client.register_script(_SET_IF_FRESH)

    @property
    def available(self) -> bool:
        return self.breaker.state == "closed"

    def _fail(self, operation: str, exc: Exception) -> None:
        self.breaker.failure()
        log.warning("redis_failed", operation=operation, error=str(exc))

    # -- answers -----------------------------------------------------------------------------

    def get_answer(self, user_id: str, limit: int) -> bytes | None:
        if not self.breaker.allow():
            CACHE_CALLS.labels("error").inc()
            return None
        try:
            raw = self._client.hget(answer_key(user_id), str(limit))
        except redis.RedisError as exc:
            self._fail("get_answer", exc)
            CACHE_CALLS.labels("error").inc()
            return None
        self.breaker.success()
        CACHE_CALLS.labels("hit" if raw is not None else "miss").inc()
        return raw  # type: ignore[return-value]

    def store_answer(
        self, user_id: str, limit: int, answer: bytes, head: bytes, ttl_s: int | None = None
    ) -> bool:
        """Cache ``answer`` unless the session moved on since ``head`` was read."""
        if not self.breaker.allow():
            return False
        try:
            stored = self._set_if_fresh(
                keys=[answer_key(user_id), session_key(user_id)],
                args=[str(limit), answer, ttl_s or self._ttl, head],
            )
        except redis.RedisError as exc:
            self._fail("store_answer", exc)
            return False
        self.breaker.success()
        return bool(stored)

    def store_last(self, user_id: str, answer: bytes) -> None:
        if not self.breaker.allow():
            return
        try:
            self._client.set(last_key(user_id), answer, ex=self._last_ttl)
        except redis.RedisError as exc:
            self._fail("store_last", exc)
            return
        self.breaker.success()

    def get_last(self, user_id: str) -> bytes | None:
        if not self.breaker.allow():
            return None
        try:
            raw = self._client.get(last_key(user_id))
        except redis.RedisError as exc:
            self._fail("get_last", exc)
            return None
        self.breaker.success()
        return raw  # type: ignore[return-value]

    def invalidate(self, user_id: str) -> None:
        if not self.breaker.allow():
            return
        try:
            self._client.delete(answer_key(user_id))
        except redis.RedisError as exc:
            self._fail("invalidate", exc)
            return
        self.breaker.success()

    # -- sessions ----------------------------------------------------------------------------

    def session(self, user_id: str) -> Session:
        if not self.breaker.allow():
            return Session([], None)
        try:
            raw = self._client.lrange(session_key(user_id), 0, self._session_len - 1)
        except redis.RedisError as exc:
            self._fail("session", exc)
            return Session([], None)
        self.breaker.success()
        entries: list[bytes] = list(raw)  # type: ignore[arg-type]
        messages = []
        for entry in entries:
            try:
                messages.append(SessionMessage.decode(entry))
            except (ValueError, KeyError, TypeError):
                log.warning("session_entry_unreadable", key=session_key(user_id))
        return Session(messages, entries[0] if entries else b"")

    def append_sessions(self, by_user: dict[str, list[SessionMessage]]) -> None:
        """Add new messages (oldest first per user) and drop those users' cached answers.

        Raises redis.RedisError: the activity follower logs it and goes on (the answers then
        stay cached until their TTL).
        """
        pipe = self._client.pipeline(transaction=True)
        for user_id, messages in by_user.items():
            key = session_key(user_id)
            pipe.lpush(key, *[m.encode() for m in messages])
            pipe.ltrim(key, 0, self._session_len - 1)
            pipe.expire(key, self._session_ttl)
            pipe.delete(answer_key(user_id))
        pipe.execute()

    def delete_users(self, user_ids: Iterable[str]) -> int:
        """Remove every key of these users. Raises redis.RedisError when Redis is down."""
        keys = [k for u in user_ids for k in user_keys(u)]
        if not keys:
            return 0
        return int(self._client.delete(*keys))

    def ping(self) -> str | None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            return f"redis: {exc}"
        return None

    def close(self) -> None:
        self._client.close()
