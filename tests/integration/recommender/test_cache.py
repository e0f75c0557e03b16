"""The recommender's cache-aside and freshness on the real servers: a new message on the
enriched topic changes the cached answer at once."""

from __future__ import annotations

import time

from mpp_recommender.activity import ActivityFollower
from mpp_recommender.core import Recommender

from mpp.kafka import TrackedProducer
from mpp.pipeline import log
from tests.integration.stores.helpers import eventually

from .world import FOOD, TRAVEL, World


def test_a_new_message_on_the_enriched_topic_changes_the_answer_at_once(
    world: World, core: Recommender
) -> None:
    user = world.user("fresh")
    world.write(world.enriched(user, TRAVEL, 1_780_000_000_000))
    follower = ActivityFollower(core).start()
    try:
        assert eventually(lambda: follower.ready, timeout_s=30)
        before = core.recommend(user, 5)
        assert before.items[0].campaign_id == "travel-summer"
        assert core.recommend(user, 5).cached

        (new,) = world.enriched(user, [FOOD], 1_780_000_100_000)
        producer = TrackedProducer(world.settings.kafka, service="test")
        producer.produce(world.settings.kafka.topics.enriched, new.SerializeToString(), key=user)
        producer.flush()
        sent = time.monotonic()

        def changed() -> bool:
            answer = core.recommend(user, 5)
            return not answer.cached and any(
                r.message_id == new.message.message_id for i in answer.items for r in i.reasons
            )

        # The vector-writer has not run: the session in Redis alone carries the message.
        assert eventually(changed, timeout_s=10)
        elapsed = time.monotonic() - sent
        log(f"answer changed {elapsed * 1000:.0f} ms after the enriched message was produced")
        after = core.recommend(user, 5)
        food = next(i for i in after.items if i.campaign_id == "food-delivery")
        assert any(r.message_id == new.message.message_id for r in food.reasons)
    finally:
        follower.stop()


def test_a_partition_that_changes_hands_skips_no_message(world: World, core: Recommender) -> None:
    """The group's first member leaves before it read anything (a worker or replica that
    stops, or loses the partition to one joining): a message produced then is read by the
    next owner, which goes on from where the first one started (the end it committed on
    assignment), not from the end at its own assignment."""
    user = world.user("handover")
    first = ActivityFollower(core).start()
    assert eventually(lambda: first.ready, timeout_s=30)
    first.stop()

    (new,) = world.enriched(user, [FOOD], 1_780_000_100_000)
    producer = TrackedProducer(world.settings.kafka, service="test")
    producer.produce(world.settings.kafka.topics.enriched, new.SerializeToString(), key=user)
    producer.flush()

    second = ActivityFollower(core).start()
    try:

        def names_new() -> bool:
            answer = core.recommend(user, 5)
            return any(
                r.message_id == new.message.message_id for i in answer.items for r in i.reasons
            )

        assert eventually(names_new, timeout_s=30)
        assert second.messages >= 1
    finally:
        second.stop()
