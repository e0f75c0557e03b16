"""How Milvus fails: the errors worth a retry, and the vector store's own refusals.

``retryable`` turns a failure that a later retry may get past (server down, slow, busy; a
collection dropped meanwhile) into ``RetryableError``, which hands the batch back to the loop.
"""

from __future__ import annotations

import grpc
from pymilvus.exceptions import MilvusException

from mpp.errors import RetryableError

# Metrics and errors name the store so: store="milvus" (``mpp.observability``).
STORE = "milvus"


class DimensionMismatchError(RuntimeError):
    """A collection holds vectors of another dimension than the model's. Not retryable."""


class SchemaMismatchError(RuntimeError):
    """An existing collection lacks fields this version writes. Not retryable."""


_TRANSIENT_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
# pymilvus' own codes: 2 is "Fail connecting to server", 8 a rate limit.
CONNECT_FAILED = 2
RATE_LIMIT = 8
COLLECTION_NOT_FOUND = 100


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same request later may succeed (server down, slow, busy)."""
    if isinstance(exc, grpc.RpcError):
        return exc.code() in _TRANSIENT_GRPC
    if isinstance(exc, MilvusException):
        code = exc.code
        if exc.retriable or code in (CONNECT_FAILED, RATE_LIMIT):
            return True
        if isinstance(code, grpc.StatusCode):
            return code in _TRANSIENT_GRPC
        return "Retry timeout" in str(exc.message)
    return isinstance(exc, ConnectionError | TimeoutError)


def retryable(operation: str, exc: BaseException) -> RetryableError | None:
    """The RetryableError that ``operation`` raises for ``exc``; None: not worth a retry."""
    if isinstance(exc, MilvusException):
        if exc.code == COLLECTION_NOT_FOUND:
            return RetryableError(f"milvus {operation}: collection missing ({exc})", STORE)
        if is_transient(exc):
            return RetryableError(f"milvus {operation}: {exc.message}", STORE)
        return None
    if is_transient(exc):
        return RetryableError(f"milvus {operation}: {exc}", STORE)
    return None
