"""Feedback on the real servers: conversions, dismissals and the daily cap remove campaigns,
impressions count once, computed answers are logged, and feedback is published keyed by
user."""

from __future__ import annotations

from datetime import UTC, datetime

from mpp_recommender.core import Recommender

from mpp.v1 import feedback_pb2 as F

from .world import FOOD, TRAVEL, World, read_topic


def test_conversions_dismissals_and_the_daily_cap_remove_campaigns(
    world: World, core: Recommender
) -> None:
    user = world.user("picky")
    world.write(world.enriched(user, [*TRAVEL, FOOD], 1_780_000_000_000))
    first = [i.campaign_id for i in core.recommend(user, 15).items]
    assert {"travel-summer", "food-delivery", "concert-tickets"} <= set(first)

    # Dismissal through the API: excluded at once (the cached answer is dropped).
    dismissal = F.FeedbackEvent(
        user_id=user, campaign_id="travel-summer", type=F.FEEDBACK_TYPE_DISMISSAL
    )
    feedback_id = core.record_feedback(dismissal)
    assert feedback_id.startswith("f-")
    # A conversion that only the analytics service recorded (feedback_facts).
    now = datetime.now(UTC)
    world.sql(
        "INSERT INTO feedback_facts (feedback_id, user_id, campaign_id, kind, occurred_at, day)"
        " VALUES ('f1', %s, 'food-delivery', 'conversion', %s, %s),"
        # concert-tickets has a daily cap of 2: two impressions today reach it.
        " ('f2', %s, 'concert-tickets', 'impression', %s, %s),"
        " ('f3', %s, 'concert-tickets', 'impression', %s, %s)",
        *([user, now, now.date()] * 3),
    )
    core.cache.invalidate(user)
    second = [i.campaign_id for i in core.recommend(user, 15).items]
    assert "travel-summer" not in second
    assert "food-delivery" not in second
    assert "concert-tickets" not in second
    assert second  # the rest are still there

    # Impressions through the API count at once, each feedback_id once: fitness-app (cap 2).
    impression = F.FeedbackEvent(
        user_id=user, campaign_id="fitness-app", type=F.FEEDBACK_TYPE_IMPRESSION
    )
    first_id = core.record_feedback(impression)
    # The analytics service recorded the same impression: still one.
    world.sql(
        "INSERT INTO feedback_facts (feedback_id, user_id, campaign_id, kind, occurred_at, day)"
        " VALUES (%s, %s, 'fitness-app', 'impression', %s, %s)",
        first_id,
        user,
        now,
        now.date(),
    )
    assert "fitness-app" in [i.campaign_id for i in core.recommend(user, 15).items]
    core.record_feedback(
        F.FeedbackEvent(user_id=user, campaign_id="fitness-app", type=F.FEEDBACK_TYPE_IMPRESSION)
    )
    assert "fitness-app" not in [i.campaign_id for i in core.recommend(user, 15).items]
    # Computed answers are logged (an audit record; cache hits add nothing).
    core.log.flush()
    logged = world.sql(
        "SELECT count(DISTINCT recommendation_id) FROM recommendation_log WHERE user_id = %s",
        user,
    )[0][0]
    assert logged == 4


def test_feedback_goes_to_the_feedback_topic_keyed_by_user(world: World, core: Recommender) -> None:
    user = world.user("clicker")
    event = F.FeedbackEvent(user_id=user, campaign_id="book-club", type=F.FEEDBACK_TYPE_CLICK)
    event.timestamp.FromMilliseconds(1_780_000_000_000)
    feedback_id = core.record_feedback(event)
    # The same feedback again gets the same id (the analytics service counts it once).
    again = F.FeedbackEvent(user_id=user, campaign_id="book-club", type=F.FEEDBACK_TYPE_CLICK)
    again.timestamp.FromMilliseconds(1_780_000_000_000)
    assert core.record_feedback(again) == feedback_id
    (first, _) = read_topic(world.settings, world.settings.kafka.topics.feedback, 2)
    assert first.key() == user.encode()
    published = F.FeedbackEvent.FromString(first.value())
    assert published.feedback_id == feedback_id and published.type == F.FEEDBACK_TYPE_CLICK
