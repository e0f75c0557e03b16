"""An enriched message as the writers read it from the topic, shared by the writers' handler
tests (test_writers.py) and the tracing tests (test_tracing_pipeline.py)."""

from __future__ import annotations

from mpp.v1 import events_pb2 as E


def enriched(message_id: str, user_id: str, text: str = "hello", dim: int = 4) -> bytes:
    message = E.ValidatedMessage(
        message_id=message_id, user_id=user_id, text=text, channel="chat", locale="en"
    )
    message.timestamp.FromMilliseconds(1_780_000_000_123)
    return E.EnrichedMessage(
        message=message,
        embedding=[0.5] * dim,
        dimension=dim,
        model="m",
        intents=[E.IntentScore(intent="billing", score=0.9)],
    ).SerializeToString()
