"""The one error model every service and store shares: retry later, or refuse for good.

A record's processing ends in one of three ways:

- it succeeds;
- a dependency is away or too slow (a store down, a broker not acknowledging): the code
  raises ``RetryableError`` naming that dependency. The batch loop backs off with consumption
  paused and retries the same batch; it never commits past it, so nothing is skipped;
- the record itself cannot be processed, now or ever (a poison record): any other exception.
  The loop isolates the record and dead-letters it with a machine-readable reason
  (``mpp.deadletters.rejection_of``); ``RecordRefused`` is the one the Kafka producer raises
  for a record the brokers refuse for good.

Each backend keeps its own ``is_transient(exc)`` next to its client (which driver errors mean
"away" differs per driver) and turns what it says is transient into ``RetryableError`` with
``RetryableError.of``, so that every store's message reads alike.

This module imports nothing of the platform: every layer may use it.
"""

from __future__ import annotations


class RetryableError(Exception):
    """A dependency is unavailable; the same batch should be tried again later.

    ``cause`` names the dependency (``milvus``, ``neo4j``, ``postgres``): the loop counts the
    retry under it (``mpp_batch_retries_total{cause}``).
    """

    def __init__(self, message: str, cause: str = "unknown") -> None:
        super().__init__(message)
        self.cause = cause

    @classmethod
    def of(cls, cause: str, operation: str, exc: BaseException | str) -> RetryableError:
        """The error for ``operation`` on ``cause`` failing transiently with ``exc``:
        ``"milvus upsert_messages: <exc>"``. Raise it ``from exc``."""
        return cls(f"{cause} {operation}: {exc}", cause)


def retry_cause(exc: BaseException) -> str:
    """What made a batch retry: the store a ``RetryableError`` names, else ``kafka`` (a
    refused produce, a record not acknowledged)."""
    if isinstance(exc, RetryableError):
        return exc.cause
    return "kafka"


class RecordRefused(ValueError):
    """Kafka refuses, for good, a record a handler produced (larger than the topic accepts).

    Not retryable: the same record would be refused again. The loop's safety net finds the
    input record that made it and dead-letters that one.
    """


class DeliveryError(RuntimeError):
    """At least one produced record was not acknowledged by the brokers (retryable: the
    batch is produced again)."""
