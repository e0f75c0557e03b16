"""What the recommender's HTTP layer calls, with the real checks and no store behind them:
the stand-in core of the HTTP tests (test_recommender.py, test_front_door_apps.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mpp_recommender.checks import check_user_id
from mpp_recommender.feedback import check_feedback

from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


class StubCore:
    """What the HTTP layer calls, with the real checks and no store behind them."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def recommend_async(
        self, user_id: str, limit: int = 0, channel: str = "", locale: str = ""
    ) -> R.RecommendResponse:
        check_user_id(user_id)
        self.asked.append(user_id)
        return R.RecommendResponse(user_id=user_id, strategy="cold_start")

    def record_feedback(self, feedback: F.FeedbackEvent) -> str:
        check_feedback(feedback, NOW.timestamp())
        self.asked.append(feedback.user_id)
        return feedback.feedback_id

    def forget_user(self, user_id: str, reason: str = "", requested_by: str = "") -> Any:
        check_user_id(user_id)
        self.asked.append(user_id)
        return R.ForgetUserResponse(request_id="r")
