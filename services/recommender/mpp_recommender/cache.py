"""Redis: cached answers, the last answer (a fallback), and each user's recent session.

Keys (``{u}`` is the user_id):
- ``mpp:rec:{u}``: a hash, field = the requested limit, value = a serialized
  ``RecommendResponse``; expires after ``cache_ttl_s``. A hit is one HGET.
- ``mpp:last:{u}``: the last answer computed with PostgreSQL up, kept ``last_answer_ttl_s``;
  answered only when PostgreSQL is down.
- ``mpp:session:{u}``: a list of the user's newest messages (JSON: id, time, float32 vector,
  intents, campaign links), newest first, at most ``recent_messages``, expiring
  ``session_ttl_s`` after the last message. New messages come from ``conversations.enriched``;
  the first answer computed for a user adds the recent messages read from Milvus and sets
  ``mpp:session-complete:{u}``, so that later misses read the user's vectors from Redis only.

- ``mpp:erased:{h}`` (``h``: the user's keyed hash, ``mpp.ids.user_hash``, never the id):
  when the user's keys were last deleted by an erasure (epoch ms), kept ``last_answer_ttl_s``.
  The fence of the cache: an answer whose computation started at or before it, and a session
  message sent at or before it, are not written (checked in the same Lua call as the write),
  so a request computed before an erasure and finished after it writes nothing back.

Freshness: appending to the session and deleting ``mpp:rec:{u}`` happen in one MULTI, and an
answer (or a session read from Milvus) is stored only if the session's newest entry is still
the one it was computed from (a Lua check-and-set), so an answer computed from an older
session never overwrites the deletion.

Redis down or slow is never an error: every call is bounded by ``redis.socket_timeout_s``,
guarded by a circuit breaker, and a failure reads as a miss (``available`` turns False).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import redis
import redis.asyncio as aioredis

from mpp.config import Settings
from mpp.ids import user_hash
from mpp.logs import get_logger
from mpp.stores import redis_client
from mpp_recommender.breaker import CircuitBreaker, State

log = get_logger(__name__)

# One round trip after an answer was computed: the last answer (always), and, only if the
# session's newest entry is still the one the answer was computed from, the answer and the
# session as read from Milvus (then marked complete).
_SAVE = """
local erased = redis.call('GET', KEYS[5])
if erased and tonumber(ARGV[8]) <= tonumber(erased) then
  return -1
end
redis.call('SET', KEYS[3], ARGV[2], 'EX', tonumber(ARGV[5]))
local head = redis.call('LINDEX', KEYS[2], 0)
if not ((head == false and ARGV[4] == '') or head == ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local n = tonumber(ARGV[7])
if n > 0 then
  redis.call('DEL', KEYS[2])
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 9, 8 + n))
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
  redis.call('SET', KEYS[4], '1', 'EX', tonumber(ARGV[6]))
end
return 1
"""

# New messages of one user (ARGV: list length, TTL, then time in ms and entry, oldest first):
# those sent after the user's erasure marker (if any) are pushed; the cached answers go.
_APPEND = """
local erased = tonumber(redis.call('GET', KEYS[3]) or '-1')
local pushed = 0
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i]) > erased then
    redis.call('LPUSH', KEYS[1], ARGV[i + 1])
    pushed = pushed + 1
  end
end
if pushed > 0 then
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
redis.call('DEL', KEYS[2])
return pushed
"""

# An erasure: the marker moves forward (never back), then every key of the user goes.
_ERASE = """
local at = ARGV[1]
local old = redis.call('GET', KEYS[1])
if old and tonumber(old) > tonumber(at) then
  at = old
end
redis.call('SET', KEYS[1], at, 'EX', tonumber(ARGV[2]))
return redis.call('DEL', unpack(KEYS, 2))
"""


def answer_key(user_id: str) -> str:
    return f"mpp:rec:{user_id}"


def answer_field(limit: int, channel: str = "", locale: str = "") -> str:
    """The field of one kind of request in the user's answer hash: the limit, and the channel
    and locale when the request gives them (targeting may change the answer)."""
    if not channel and not locale:
        return str(limit)
    return f"{limit}|{channel.lower()}|{locale.lower()}"


def last_key(user_id: str) -> str:
    return f"mpp:last:{user_id}"


def session_key(user_id: str) -> str:
    return f"mpp:session:{user_id}"


def complete_key(user_id: str) -> str:
    return f"mpp:session-complete:{user_id}"


def erased_key(user_id: str) -> str:
    """The user's erasure marker: named by the keyed hash, so it shows no user id."""
    return f"mpp:erased:{user_hash(user_id)}"


def user_keys(user_id: str) -> list[str]:
    """Every key the recommender keeps for the user."""
    return [answer_key(user_id), last_key(user_id), session_key(user_id), complete_key(user_id)]


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
    # The raw newest entry ("" when empty), the token for ``save``; None: Redis down.
    head: bytes | None
    # The session holds the user's recent messages read from Milvus too (not only those that
    # arrived while the service followed the stream): Milvus need not be read again.
    complete: bool = False
    # Why Redis was not read (head None): "open" (its breaker) or "error".
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Lookup:
    """A cached-answer lookup: the answer (None: a miss, or Redis was not read) and why."""

    raw: bytes | None
    outcome: Literal["hit", "miss", "error"]
    # When the outcome is "error": "open" (the Redis breaker) or "error".
    problem: str = ""


_OPEN = Lookup(None, "error", "open")
_FAILED = Lookup(None, "error", "error")
_MISS = Lookup(None, "miss")


class RedisCache:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        cfg = settings.recommender
        self._client = client if client is not None else redis_client(settings)
        # The cache-hit path of the servers runs on their event loop: one HGET, no thread.
        self._async = aioredis.Redis(
            connection_pool=aioredis.ConnectionPool.from_url(
                settings.redis.url, max_connections=256, **settings.redis.client_kwargs()
            )
        )
        self._ttl = cfg.cache_ttl_s
        self._last_ttl = cfg.last_answer_ttl_s
        self._session_ttl = cfg.session_ttl_s
        self._session_len = cfg.recent_messages
        self.breaker = CircuitBreaker(
            "redis", cfg.breaker_failures, cfg.breaker_reset_s, on_change=on_change
        )
        self._save = self._client.register_script(_SAVE)
        self._append = self._client.register_script(_APPEND)
        self._erase = self._client.register_script(_ERASE)
        # The erasure marker outlives every answer and session it fences.
        self._erased_ttl = max(cfg.last_answer_ttl_s, cfg.session_ttl_s, cfg.cache_ttl_s)

    @property
    def available(self) -> bool:
        return self.breaker.state == "closed"

    def _fail(self, operation: str, exc: BaseException) -> None:
        self.breaker.failure()
        log.warning("redis_failed", operation=operation, error=str(exc))

    # -- answers -----------------------------------------------------------------------------

    def get_answer(self, user_id: str, field: str) -> Lookup:
        """The cached answer of ``field`` (``answer_field``) for the user, if any."""
        if not self.breaker.allow():
            return _OPEN
        try:
            raw = self._client.hget(answer_key(user_id), field)
        except redis.RedisError as exc:
            self._fail("get_answer", exc)
            return _FAILED
        self.breaker.success()
        return Lookup(raw, "hit") if isinstance(raw, bytes) else _MISS

    async def get_answer_async(self, user_id: str, field: str) -> Lookup:
        """``get_answer`` on the caller's event loop."""
        if not self.breaker.allow():
            return _OPEN
        try:
            raw = await self._async.hget(answer_key(user_id), field)
        except (redis.RedisError, OSError) as exc:
            self._fail("get_answer", exc)
            return _FAILED
        self.breaker.success()
        return Lookup(raw, "hit") if isinstance(raw, bytes) else _MISS

    def save(
        self,
        user_id: str,
        field: str,
        answer: bytes,
        head: bytes,
        ttl_s: int,
        session: list[SessionMessage] | None = None,
        started_ms: int | None = None,
    ) -> bool:
        """Keep ``answer`` as the last answer; cache it (and ``session``, newest first, as the
        user's complete session) unless the session moved on since ``head`` was read.

        ``started_ms`` (epoch ms, default now): when the answer's computation began. Nothing
        is written when the user was erased at or after it (the erasure marker)."""
        if not self.breaker.allow():
            return False
        entries = [m.encode() for m in session or ()]
        try:
            stored = self._save(
                keys=[
                    answer_key(user_id),
                    session_key(user_id),
                    last_key(user_id),
                    complete_key(user_id),
                    erased_key(user_id),
                ],
                args=[
                    field,
                    answer,
                    ttl_s,
                    head,
                    self._last_ttl,
                    self._session_ttl,
                    len(entries),
                    int(time.time() * 1000) if started_ms is None else started_ms,
                    *entries,
                ],
            )
        except redis.RedisError as exc:
            self._fail("save", exc)
            return False
        self.breaker.success()
        return bool(stored == 1)

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
            return Session([], None, problem="open")
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.lrange(session_key(user_id), 0, self._session_len - 1)
            pipe.exists(complete_key(user_id))
            raw, complete = pipe.execute()
        except redis.RedisError as exc:
            self._fail("session", exc)
            return Session([], None, problem="error")
        self.breaker.success()
        entries: list[bytes] = list(raw)
        messages = []
        for entry in entries:
            try:
                messages.append(SessionMessage.decode(entry))
            except (ValueError, KeyError, TypeError):
                log.warning("session_entry_unreadable", key=session_key(user_id))
        return Session(messages, entries[0] if entries else b"", bool(complete))

    def append_sessions(self, by_user: dict[str, list[SessionMessage]]) -> int:
        """Add new messages (oldest first per user) and drop those users' cached answers; a
        message sent at or before its user's erasure marker is not added (one Lua call per
        user, so the check and the write are one step). Returns how many were added.

        Raises redis.RedisError: the activity follower logs it and goes on (the answers then
        stay cached until their TTL).
        """
        pipe = self._client.pipeline(transaction=True)
        for user_id, messages in by_user.items():
            args: list[int | bytes] = [self._session_len, self._session_ttl]
            for m in messages:
                args += [m.ts_ms, m.encode()]
            self._append(
                keys=[session_key(user_id), answer_key(user_id), erased_key(user_id)],
                args=args,
                client=pipe,
            )
        return sum(int(n) for n in pipe.execute())

    def delete_users(self, user_ids: Iterable[str], at_ms: int | None = None) -> int:
        """Remove every key of these users and set their erasure markers to ``at_ms`` (epoch
        ms, default now; a marker never moves back): an answer computed before, or a message
        sent before, is not written after this. Raises redis.RedisError when Redis is down."""
        at = int(time.time() * 1000) if at_ms is None else at_ms
        pipe = self._client.pipeline(transaction=True)
        users = list(dict.fromkeys(user_ids))
        for user_id in users:
            self._erase(
                keys=[erased_key(user_id), *user_keys(user_id)],
                args=[at, self._erased_ttl],
                client=pipe,
            )
        return sum(int(n) for n in pipe.execute()) if users else 0

    def ping(self) -> str | None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            return f"redis: {exc}"
        return None

    def close(self) -> None:
        self._client.close()
