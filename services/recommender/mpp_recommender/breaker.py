"""A circuit breaker per candidate source (and for the cache).

Closed: calls go through. After ``failures`` failures in a row (errors or timeouts) it opens:
calls are skipped, so a dead or hung store costs nothing, for ``reset_s``. Then it is half-open:
one call goes through; success closes it, failure opens it again for another ``reset_s``.
Thread-safe; ``clock`` is injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failures: int = 3,
        reset_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and reset_s > 0")
        self.name = name
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> State:
        with self._lock:
            return self._state()

    def _state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._reset_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one trial call at a time."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False
        if was_open and self._on_change:
            self._on_change(self.name, "closed")

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_in_flight = False
            opened = False
            if self._opened_at is not None or self._failures >= self._threshold:
                opened = self._opened_at is None
                self._opened_at = self._clock()
        if opened and self._on_change:
            self._on_change(self.name, "open")
