"""Feedback: a user's impression, click, conversion or dismissal of a recommended campaign.

``check_feedback`` validates and completes the event; ``FeedbackRecorder.record`` publishes
it to the feedback topic (acknowledged: the analytics service records it from there), writes
it to ``recommender_feedback`` so that the rules apply it at once, and drops the user's cached
answers that it changes. Feedback of an erased user, stamped at or before the erasure, is
dropped (counted in ``mpp_recommender_feedback_of_erased_total``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from mpp.codecs import Rejection, event_time
from mpp.erasure import fence
from mpp.ids import derive_feedback_id
from mpp.kafka import TrackedProducer
from mpp.logs import get_logger
from mpp.v1 import feedback_pb2 as F
from mpp.validation import CAMPAIGN_ID
from mpp_recommender.cache import RedisCache
from mpp_recommender.checks import InvalidArgument, Unavailable, check_user_id
from mpp_recommender.sources import PostgresSource
from mpp_recommender.telemetry import FEEDBACK_OF_ERASED, SERVICE

log = get_logger(__name__)

FEEDBACK_KINDS = {
    F.FEEDBACK_TYPE_IMPRESSION: "impression",
    F.FEEDBACK_TYPE_CLICK: "click",
    F.FEEDBACK_TYPE_CONVERSION: "conversion",
    F.FEEDBACK_TYPE_DISMISSAL: "dismissal",
}


def check_feedback(feedback: F.FeedbackEvent, now_s: float | None = None) -> tuple[str, datetime]:
    """The feedback's kind and time (UTC), or InvalidArgument naming the field.

    Completes the event in place: a missing timestamp becomes ``now_s`` (default: the clock),
    a missing feedback_id is derived from the rest, so that a retry is counted once.
    """
    check_user_id(feedback.user_id, "feedback.user_id")
    if not feedback.campaign_id:
        raise InvalidArgument("feedback.campaign_id", "is required; name the campaign")
    if not CAMPAIGN_ID.fullmatch(feedback.campaign_id):
        raise InvalidArgument(
            "feedback.campaign_id",
            f"{feedback.campaign_id[:80]!r} is not a campaign id: use 1-128 characters of "
            "letters, digits and ._:- starting with a letter or digit",
        )
    kind = FEEDBACK_KINDS.get(feedback.type)
    if kind is None:
        raise InvalidArgument(
            "feedback.type", "must be one of impression, click, conversion, dismissal"
        )
    if len(feedback.feedback_id) > 128:
        raise InvalidArgument("feedback.feedback_id", "is longer than 128 characters")
    now_s = time.time() if now_s is None else now_s
    if not feedback.HasField("timestamp"):
        feedback.timestamp.FromNanoseconds(int(now_s * 1e9))
    try:
        occurred = event_time(feedback.timestamp, "feedback.timestamp")
    except Rejection as exc:
        raise InvalidArgument(exc.field, exc.detail) from exc
    ts_ms = feedback.timestamp.ToMilliseconds()
    if ts_ms > now_s * 1000 + 300_000:
        raise InvalidArgument(
            "feedback.timestamp", "is more than 5 minutes in the future; send UTC time"
        )
    if not feedback.feedback_id:
        feedback.feedback_id = derive_feedback_id(
            feedback.user_id, feedback.campaign_id, kind, ts_ms
        )
    return kind, occurred


@dataclass(slots=True)
class FeedbackRecorder:
    """Records feedback on the ``topic``, in PostgreSQL and in the cache's state.

    ``is_erased(user_id, ts_ms)``: whether ``ts_ms`` is at or before an erasure of the user
    that this process knows (``ErasedUsers.is_erased``).
    """

    topic: str
    producer: TrackedProducer
    postgres: PostgresSource
    cache: RedisCache
    is_erased: Callable[[str, int], bool]

    def record(self, feedback: F.FeedbackEvent) -> str:
        """Validate, publish to the feedback topic (acknowledged), apply it to the rules at once.

        Returns the feedback_id (derived when the caller gave none, so that a retry of the
        same feedback is counted once). Raises InvalidArgument or Unavailable (Kafka down).
        """
        kind, occurred = check_feedback(feedback)
        if self.is_erased(feedback.user_id, feedback.timestamp.ToMilliseconds()):
            # Feedback of an erased user, stamped at or before the erasure, brings nothing
            # back: neither the topic nor the tables get it (the analytics and the ledger
            # would drop it too). The caller is answered as usual (a retry changes nothing).
            FEEDBACK_OF_ERASED.labels(SERVICE).inc()
            log.info("feedback_of_erased_user_dropped", feedback_id=feedback.feedback_id)
            return feedback.feedback_id
        try:
            self.producer.produce(self.topic, feedback.SerializeToString(), key=feedback.user_id)
            self.producer.flush(5.0)
        except Exception as exc:
            raise Unavailable(f"kafka: feedback not recorded ({exc}); retry") from exc
        try:
            with self.postgres.pool.connection() as conn, conn.transaction():
                at = fence(conn, [feedback.user_id]).get(feedback.user_id)
                if at is not None and occurred <= at:
                    FEEDBACK_OF_ERASED.labels(SERVICE).inc()
                    return feedback.feedback_id
                conn.execute(
                    "INSERT INTO recommender_feedback (feedback_id, user_id, campaign_id, kind,"
                    " occurred_at, day) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (
                        feedback.feedback_id,
                        feedback.user_id,
                        feedback.campaign_id,
                        kind,
                        occurred,
                        occurred.date(),
                    ),
                )
        except Exception as exc:
            # The event is on the topic: analytics records it, and the rules apply it then.
            log.warning("feedback_not_recorded_locally", error=str(exc))
        capped = self.postgres.catalog.get(feedback.campaign_id)
        if kind in ("conversion", "dismissal") or (
            kind == "impression" and capped is not None and capped.daily_frequency_cap > 0
        ):
            self.cache.invalidate(feedback.user_id)
        return feedback.feedback_id
