"""The recommender's core on the real servers: blended candidates with reasons, popularity for
a stranger, the rules of targeting (channel and locale), and validation naming the field.

The world and its fixtures are in world.py."""

from __future__ import annotations

import psycopg
import pytest
from mpp_recommender.checks import InvalidArgument
from mpp_recommender.core import Recommender

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.stores.campaigns import upsert_campaigns
from mpp.v1 import feedback_pb2 as F

from .world import TRAVEL, World


def test_a_user_who_talks_about_travel_gets_the_travel_campaign_first_with_reasons(
    world: World, core: Recommender
) -> None:
    user = world.user("traveller")
    messages = world.enriched(user, TRAVEL, 1_780_000_000_000)
    world.write(messages)

    answer = core.recommend(user, 5)
    assert answer.strategy == "personalized"
    assert list(answer.degraded_sources) == []
    assert not answer.cached
    top = answer.items[0]
    assert top.campaign_id == "travel-summer"
    assert top.name == "Summer getaways"
    by_kind = {(r.source, r.kind): r for r in top.reasons}
    ids = {m.message.message_id for m in messages}
    similar = by_kind[("milvus", "similar_to_messages")]
    assert similar.message_id in ids and similar.score > 0.3
    intent = by_kind[("neo4j", "intent_match")]
    assert intent.intent == "travel" and intent.message_id in ids
    assert len(answer.items) == 5
    assert [i.score for i in answer.items] == sorted((i.score for i in answer.items), reverse=True)

    # A second request is a cache hit: the same answer.
    again = core.recommend(user, 5)
    assert again.cached and again.recommendation_id == answer.recommendation_id


def test_an_unknown_user_gets_the_popular_campaigns(world: World, core: Recommender) -> None:
    world.sql(
        "INSERT INTO campaign_performance (campaign_id, messages, impressions, clicks,"
        " conversions, ctr, conversion_rate) VALUES"
        " ('book-club', 10, 1000, 200, 40, 0.2, 0.2),"
        " ('job-board', 10, 1000, 50, 5, 0.05, 0.1),"
        " ('winter-sale-2019', 10, 1000, 900, 500, 0.9, 0.5)"
    )
    core.postgres.popular(force=True)
    answer = core.recommend(world.user("newcomer"), 3)
    assert answer.strategy == "cold_start"
    ids = [i.campaign_id for i in answer.items]
    # winter-sale-2019 ended in 2019: never recommended, however popular.
    assert ids[:2] == ["book-club", "job-board"]
    assert answer.items[0].reasons[0].source == "postgres"
    assert answer.items[0].reasons[0].kind == "popular"
    assert "200 clicks" in answer.items[0].reasons[0].detail
    assert "winter-sale-2019" not in ids


def test_a_campaign_targeted_at_a_channel_and_locale_is_answered_only_there(
    world: World, core: Recommender
) -> None:
    user = world.user("targeted")
    world.write(world.enriched(user, TRAVEL, 1_780_000_000_000))
    assert core.recommend(user, 3, "chat", "en").items[0].campaign_id == "travel-summer"
    # The marketer restricts the campaign to e-mail in English (the catalog file's fields).
    campaigns = [
        c.model_copy(update={"channels": ["email"], "locales": ["en"]})
        if c.campaign_id == "travel-summer"
        else c
        for c in parse_campaigns(default_campaigns_path())
    ]
    with psycopg.connect(world.settings.postgres.conninfo()) as conn:
        upsert_campaigns(conn, campaigns)
    core.postgres.refresh_catalog(force=True)
    core.cache.invalidate(user)

    def ids(channel: str, locale: str) -> list[str]:
        return [i.campaign_id for i in core.recommend(user, 15, channel, locale).items]

    assert "travel-summer" not in ids("chat", "en")
    assert ids("email", "en-GB")[0] == "travel-summer"
    assert "travel-summer" not in ids("email", "fr")
    assert "travel-summer" not in ids("", "")
    # Each (limit, channel, locale) has its own cached answer: the e-mail one is not served
    # to chat, and a second e-mail request is a hit.
    assert core.recommend(user, 15, "email", "en-GB").cached
    assert "travel-summer" not in ids("chat", "en")
    with pytest.raises(InvalidArgument, match="channel"):
        core.recommend(user, 5, "In App!", "")
    with pytest.raises(InvalidArgument, match="locale"):
        core.recommend(user, 5, "", "english")


def test_invalid_input_names_the_field(core: Recommender) -> None:
    with pytest.raises(InvalidArgument) as bad_user:
        core.recommend("not a user id!", 5)
    assert bad_user.value.field == "user_id" and "letters, digits" in bad_user.value.message
    with pytest.raises(InvalidArgument) as bad_limit:
        core.recommend("u1", 500)
    assert bad_limit.value.field == "limit" and "1-100" in bad_limit.value.message
    with pytest.raises(InvalidArgument) as bad_type:
        core.record_feedback(F.FeedbackEvent(user_id="u1", campaign_id="c1"))
    assert bad_type.value.field == "feedback.type"
    with pytest.raises(InvalidArgument) as bad_campaign:
        core.record_feedback(
            F.FeedbackEvent(user_id="u1", campaign_id="no spaces", type=F.FEEDBACK_TYPE_CLICK)
        )
    assert bad_campaign.value.field == "feedback.campaign_id"
