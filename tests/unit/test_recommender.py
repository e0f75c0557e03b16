"""The recommender's pure logic: blending, rules, the user vector, the circuit breaker,
popularity scores, validation, the session encoding. No server."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Message
from fastapi.testclient import TestClient
from mpp_recommender.activity import ActivityFollower
from mpp_recommender.blend import (
    CampaignInfo,
    Candidate,
    Ranked,
    Reason,
    TimedVector,
    UserRules,
    apply_rules,
    blend,
    user_vector,
)
from mpp_recommender.breaker import CircuitBreaker
from mpp_recommender.cache import SessionMessage
from mpp_recommender.checks import InvalidArgument, check_limit, check_target, check_user_id
from mpp_recommender.feedback import check_feedback
from mpp_recommender.http_api import answer_json, create_app
from mpp_recommender.sources import popularity_candidates, rules_from_rows

from mpp.config import AuthSettings, Settings, Topics
from mpp.erasure import user_hash
from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R

from .stub_core import NOW, StubCore


def reason(source: str, score: float) -> Reason:
    return Reason(source, "k", "d", score)


def test_blend_normalizes_each_source_weighs_and_keeps_every_reason() -> None:
    ranked = blend(
        {
            # Cosines: a is the best (1.0 after normalization), b half as good.
            "milvus": [Candidate("a", 0.8, [reason("milvus", 0.8)]), Candidate("b", 0.4)],
            # Another scale entirely: only the ratio to the source's best counts.
            "neo4j": [Candidate("b", 30.0, [reason("neo4j", 30.0)]), Candidate("c", 15.0)],
            # Negative scores count as nothing.
            "postgres": [Candidate("c", -1.0), Candidate("d", 0.0)],
        },
        {"milvus": 1.0, "neo4j": 0.5, "postgres": 0.3},
    )
    scores = {r.campaign_id: round(r.score, 6) for r in ranked}
    assert scores == {"a": 1.0, "b": 1.0, "c": 0.25, "d": 0.0}
    # Ties by campaign_id; b's reasons from both sources, best first.
    assert [r.campaign_id for r in ranked] == ["a", "b", "c", "d"]
    assert [x.source for x in ranked[1].reasons] == ["neo4j"]


def test_blend_with_a_zero_weight_source_ignores_it() -> None:
    ranked = blend({"milvus": [Candidate("a", 1.0)], "neo4j": [Candidate("b", 1.0)]}, {"milvus": 1})
    assert [(r.campaign_id, r.score) for r in ranked] == [("a", 1.0), ("b", 0.0)]


def catalog() -> dict[str, CampaignInfo]:
    return {
        "live": CampaignInfo("live", "Live"),
        "off": CampaignInfo("off", "Off", active=False),
        "ended": CampaignInfo("ended", "Ended", ends_at=NOW - timedelta(days=1)),
        "later": CampaignInfo("later", "Later", starts_at=NOW + timedelta(days=1)),
        "capped": CampaignInfo("capped", "Capped", daily_frequency_cap=2),
        "dismissed": CampaignInfo("dismissed", "Dismissed"),
        "converted": CampaignInfo("converted", "Converted"),
    }


def test_rules_keep_only_live_campaigns_never_excluded_within_their_cap() -> None:
    items = [Ranked(c, 1.0, []) for c in [*catalog(), "unknown"]]
    rules = UserRules(
        excluded={"dismissed": "dismissal", "converted": "conversion"},
        shown_today={"capped": 2, "live": 99},
    )
    assert [r.campaign_id for r in apply_rules(items, catalog(), rules, NOW)] == ["live"]
    under_cap = UserRules(shown_today={"capped": 1})
    kept = apply_rules(items, catalog(), under_cap, NOW)
    assert [r.campaign_id for r in kept] == ["live", "capped", "dismissed", "converted"]


def test_rules_keep_campaigns_targeted_at_the_requests_channel_and_locale() -> None:
    targeted = {
        "anywhere": CampaignInfo("anywhere", "Anywhere"),
        "email": CampaignInfo("email", "Email only", channels=("email",)),
        "english": CampaignInfo("english", "English", locales=("en",)),
        "uk-push": CampaignInfo("uk-push", "UK push", channels=("push",), locales=("en-gb",)),
    }
    items = [Ranked(c, 1.0, []) for c in targeted]

    def kept(channel: str, locale: str) -> list[str]:
        ranked = apply_rules(items, targeted, UserRules(), NOW, channel, locale)
        return [r.campaign_id for r in ranked]

    assert kept("", "") == ["anywhere"]
    assert kept("email", "") == ["anywhere", "email"]
    assert kept("chat", "en-US") == ["anywhere", "english"]
    assert kept("push", "en-GB") == ["anywhere", "english", "uk-push"]
    assert kept("push", "en-US") == ["anywhere", "english"]
    assert kept("email", "fr") == ["anywhere", "email"]


def test_user_vector_weighs_recent_messages_more() -> None:
    old, new = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    day = 86_400_000
    # The old message is two half-lives older than the newest: a quarter of its weight.
    vector = user_vector([TimedVector(0, old), TimedVector(2 * day, new)], half_life_s=86_400)
    assert vector is not None
    assert np.isclose(np.linalg.norm(vector), 1.0)
    assert np.isclose(vector[1] / vector[0], 4.0)
    assert user_vector([], 1.0) is None
    assert user_vector([TimedVector(0, np.zeros(2, np.float32))], 1.0) is None


def test_breaker_opens_after_failures_then_lets_one_trial_through() -> None:
    now = [0.0]
    changes: list[str] = []
    breaker = CircuitBreaker(
        "x", failures=2, reset_s=5, clock=lambda: now[0], on_change=lambda n, s: changes.append(s)
    )
    breaker.failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 5.0
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.failure()  # the trial failed: open for another reset_s
    assert breaker.state == "open"
    now[0] = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()
    assert changes == ["open", "closed"]
    with pytest.raises(ValueError):
        CircuitBreaker("bad", failures=0)


def test_popularity_prefers_evidence_over_a_lucky_click() -> None:
    rows = [
        {"campaign_id": "lucky", "messages": 0, "impressions": 1, "clicks": 1,
         "conversions": 0, "ctr": 1.0},
        {"campaign_id": "proven", "messages": 0, "impressions": 10_000, "clicks": 2_000,
         "conversions": 400, "ctr": 0.2},
        {"campaign_id": "talked", "messages": 5_000, "impressions": 0, "clicks": 0,
         "conversions": 0, "ctr": 0.0},
    ]  # fmt: skip
    ranked = popularity_candidates(rows)
    # One click in one impression is no evidence; 5,000 messages about a campaign are some.
    assert [c.campaign_id for c in ranked] == ["proven", "talked", "lucky"]
    assert "2000 clicks of 10000 impressions" in ranked[0].reasons[0].detail


def test_rules_from_rows_reads_exclusions_and_impressions() -> None:
    rules = rules_from_rows([("a", "dismissal", 1), ("b", "conversion", 2), ("c", "impression", 3)])
    assert rules.excluded == {"a": "dismissal", "b": "conversion"}
    assert rules.shown_today == {"c": 3}


def test_validation_names_the_field_and_the_fix() -> None:
    assert check_user_id("user-1@example.com") == "user-1@example.com"
    for bad in ("", "with space", "x" * 129, "-leading"):
        with pytest.raises(InvalidArgument) as info:
            check_user_id(bad, "feedback.user_id")
        assert info.value.field == "feedback.user_id"
    assert check_limit(0, 10) == 10 and check_limit(100, 10) == 100
    with pytest.raises(InvalidArgument, match="1-100"):
        check_limit(101, 10)


def test_session_messages_survive_encoding() -> None:
    message = SessionMessage(
        "m1", 123, np.arange(4, dtype=np.float32), (("travel", 0.5),), (("c1", 0.4),)
    )
    back = SessionMessage.decode(message.encode())
    assert back.message_id == "m1" and back.ts_ms == 123
    assert back.intents == (("travel", 0.5),) and back.campaigns == (("c1", 0.4),)
    assert np.array_equal(back.embedding, message.embedding)


def test_answer_json_has_every_field_of_the_response() -> None:
    answer = R.RecommendResponse(user_id="u", recommendation_id="r", strategy="personalized")
    answer.generated_at.FromDatetime(NOW)
    answer.degraded_sources.append("neo4j")
    answer.items.append(
        R.Recommendation(
            campaign_id="c",
            name="C",
            score=0.5,
            reasons=[R.Reason(source="milvus", kind="k", detail="d", score=0.5, message_id="m")],
        )
    )
    body = answer_json(answer)
    assert body["generated_at"] == "2026-06-01T12:00:00+00:00"
    assert body["degraded_sources"] == ["neo4j"] and body["cached"] is False
    assert body["items"][0]["reasons"][0]["message_id"] == "m"
    item_fields = set(R.Recommendation.DESCRIPTOR.fields_by_name)
    assert set(body["items"][0]) == item_fields
    assert set(body["items"][0]["reasons"][0]) == set(R.Reason.DESCRIPTOR.fields_by_name)
    assert set(body) == set(R.RecommendResponse.DESCRIPTOR.fields_by_name)


def test_user_hash_is_keyed_not_a_plain_sha256_of_the_id() -> None:
    # A plain SHA-256 of the id could be reversed by hashing guessed ids: the ledger's name
    # for a user is an HMAC under MPP_IDS__HMAC_KEY instead.
    key = b"k" * 16
    assert user_hash("é", key) == hmac.new(key, "user\x1fé".encode(), hashlib.sha256).hexdigest()
    assert user_hash("é") != hashlib.sha256("é".encode()).hexdigest()
    assert user_hash("é") != user_hash("é", key)
    assert len(user_hash("u1")) == 64


def test_ids_and_targets_with_a_trailing_newline_are_refused() -> None:
    assert check_user_id("u1") == "u1"
    with pytest.raises(InvalidArgument) as info:
        check_user_id("u1\n")
    assert info.value.field == "user_id"
    check_target("web", "en")
    for channel, locale in (("web\n", ""), ("", "en\n")):
        with pytest.raises(InvalidArgument):
            check_target(channel, locale)


def _feedback(**fields: Any) -> F.FeedbackEvent:
    base: dict[str, Any] = {"user_id": "u1", "campaign_id": "c1", "type": F.FEEDBACK_TYPE_CLICK}
    return F.FeedbackEvent(**{**base, **fields})


def test_check_feedback_completes_the_event_and_names_bad_fields() -> None:
    now_s = NOW.timestamp()
    event = _feedback()
    assert check_feedback(event, now_s) == ("click", NOW)
    assert event.timestamp.ToMilliseconds() == int(now_s * 1000)
    assert event.feedback_id.startswith("f-")
    for bad, field in (
        (_feedback(campaign_id="c1\n"), "feedback.campaign_id"),
        (_feedback(user_id="u1\n"), "feedback.user_id"),
    ):
        with pytest.raises(InvalidArgument) as info:
            check_feedback(bad, now_s)
        assert info.value.field == field


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-1, 0), (-62_135_596_800, 0), (7_258_118_400, 0), (253_402_300_800, 0), (2**62, 0), (1, -1)],
)
def test_feedback_times_out_of_range_are_invalid_arguments(seconds: int, nanos: int) -> None:
    event = _feedback()
    event.timestamp.seconds, event.timestamp.nanos = seconds, nanos
    with pytest.raises(InvalidArgument) as info:
        check_feedback(event, NOW.timestamp())
    assert info.value.field == "feedback.timestamp"


@pytest.fixture
def http() -> tuple[TestClient, StubCore]:
    core = StubCore()
    settings = Settings(auth=AuthSettings(enabled=False))
    app = create_app(settings, core, lambda: {"status": "ready"})  # type: ignore[arg-type]
    return TestClient(app), core


def test_http_path_ids_with_a_newline_or_an_encoded_slash_are_refused(
    http: tuple[TestClient, StubCore],
) -> None:
    client, core = http
    assert client.get("/recommendations/u1").json()["user_id"] == "u1"
    assert client.delete("/users/u1").json()["request_id"] == "r"
    for response in (
        client.get("/recommendations/u1%0A"),
        client.get("/recommendations/u1%0Ax"),
        client.delete("/users/u1%0A"),
    ):
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "user_id"
    assert client.get("/recommendations/u1%2Fx").status_code == 404
    assert client.delete("/users/u1%2Fx").status_code == 404
    assert core.asked == ["u1", "u1"]


@pytest.mark.parametrize(
    "timestamp",
    [
        "9999-12-31T23:59:59-05:00",  # past the year 9999 once in UTC
        "0001-01-01T00:00:00+01:00",  # before the year 1 once in UTC
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
    ],
)
def test_http_feedback_times_out_of_range_are_422(
    http: tuple[TestClient, StubCore], timestamp: str
) -> None:
    client, core = http
    body = {"user_id": "u1", "campaign_id": "c1", "type": "click", "timestamp": timestamp}
    response = client.post("/feedback", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "timestamp"
    assert core.asked == []
    body["timestamp"] = "2026-06-01T13:00:00+01:00"
    assert client.post("/feedback", json=body).status_code == 200


def test_http_deeply_nested_json_is_a_client_error(http: tuple[TestClient, StubCore]) -> None:
    client, _ = http
    body = b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = client.post("/feedback", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400


class _Cache:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_users(self, users: list[str]) -> None:
        self.deleted.extend(users)


class _ErasureCore:
    def __init__(self) -> None:
        self.cache = _Cache()
        self.noted: list[tuple[str, int]] = []

    def note_erased(self, user_id: str, at_ms: int) -> None:
        self.noted.append((user_id, at_ms))


def test_the_activity_follower_skips_erasures_with_times_out_of_range() -> None:
    # Built without __init__: no Kafka consumer, no ledger; handle() needs neither here.
    follower = object.__new__(ActivityFollower)
    core = _ErasureCore()
    follower._core, follower._topics = core, Topics()  # type: ignore[assignment]
    follower.messages = follower.erasures = 0

    def erasure(user_id: str, seconds: int) -> Message:
        request = F.ErasureRequest(user_id=user_id, request_id="r")
        request.requested_at.seconds = seconds
        return Message(topic=Topics().erasure, value=request.SerializeToString())

    follower.handle([erasure("bad", 2**62), erasure("old", -1), erasure("ok", 1_780_000_000)])
    assert core.noted == [("ok", 1_780_000_000_000)]
    assert core.cache.deleted == ["ok"]
