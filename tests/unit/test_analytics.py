"""Analytics' pure logic: decoding and sorting a batch, dead-letter reasons, the handler's
order (write, then dead letters), charts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from confluent_kafka import Message
from fastapi.testclient import TestClient
from mpp_analytics import records, service, web
from mpp_analytics.charts import activity_chart, campaign_chart

from mpp import analytics
from mpp.auth import key_entry
from mpp.config import AuthSettings, Settings, Topics
from mpp.kafka import RetryableError
from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F

ENRICHED, FEEDBACK, ERASURE = "enriched", "feedback", "erasure"
PNG = b"\x89PNG\r\n\x1a\n"
NO_USER_ERASURE = F.ErasureRequest(request_id="r").SerializeToString()


def enriched(
    message_id: str = "m1",
    user_id: str = "u1",
    millis: int = 1_780_000_000_000,
    intents: tuple[str, ...] = ("billing", "unknown", "billing"),
    campaigns: tuple[str, ...] = ("c1",),
    timestamp: bool = True,
    raw_seconds: int | None = None,
) -> bytes:
    message = E.ValidatedMessage(message_id=message_id, user_id=user_id, channel="chat")
    if raw_seconds is not None:
        message.timestamp.seconds = raw_seconds  # unchecked, as a producer could send it
    elif timestamp:
        message.timestamp.FromMilliseconds(millis)
    return E.EnrichedMessage(
        message=message,
        intents=[E.IntentScore(intent=i, score=0.5) for i in intents],
        campaigns=[E.CampaignLink(campaign_id=c, score=0.5) for c in campaigns],
    ).SerializeToString()


def feedback(
    feedback_id: str = "f1",
    user_id: str = "u1",
    campaign_id: str = "c1",
    kind: int = F.FEEDBACK_TYPE_CLICK,
    timestamp: bool = True,
    raw_seconds: int | None = None,
) -> bytes:
    event = F.FeedbackEvent(
        feedback_id=feedback_id,
        user_id=user_id,
        campaign_id=campaign_id,
        type=kind,  # type: ignore[arg-type]
    )
    if raw_seconds is not None:
        event.timestamp.seconds = raw_seconds  # unchecked, as a producer could send it
    elif timestamp:
        event.timestamp.FromMilliseconds(1_780_000_000_000)
    return event.SerializeToString()


def erasure(user_id: str, raw_seconds: int | None = None) -> bytes:
    request = F.ErasureRequest(user_id=user_id, request_id="r1")
    if raw_seconds is not None:
        request.requested_at.seconds = raw_seconds
    return request.SerializeToString()


def batch(*items: tuple[str, bytes]) -> list[Message]:
    return [
        Message(topic=topic, partition=0, offset=i, key=b"k", value=value)
        for i, (topic, value) in enumerate(items)
    ]


def plan(*items: tuple[str, bytes]) -> records.Batch:
    return records.plan_batch(batch(*items), ENRICHED, FEEDBACK, ERASURE)


def test_a_message_fact_keeps_known_intents_once_and_its_utc_day() -> None:
    # 23:30 UTC is already the next day in Paris: the day is the UTC one.
    at = datetime(2026, 11, 28, 23, 30, tzinfo=UTC)
    millis = int(at.timestamp() * 1000)
    (fact,) = plan((ENRICHED, enriched(millis=millis))).messages.values()
    assert fact.intents == ("billing",)
    assert fact.campaign_ids == ("c1",)
    assert fact.occurred_at == at
    assert fact.day == date(2026, 11, 28)
    assert fact.as_json()["day"] == "2026-11-28"
    after = plan((ENRICHED, enriched(millis=millis + 1_800_000))).messages["m1"]
    assert after.day == date(2026, 11, 29)


def test_a_message_keeps_its_last_version_and_feedback_its_first_within_a_batch() -> None:
    p = plan(
        (ENRICHED, enriched(intents=("billing",))),
        (ENRICHED, enriched(intents=("refund",))),
        (FEEDBACK, feedback(kind=F.FEEDBACK_TYPE_CLICK)),
        (FEEDBACK, feedback(kind=F.FEEDBACK_TYPE_CONVERSION)),
    )
    assert p.messages["m1"].intents == ("refund",)
    assert p.feedback["f1"].kind == "click"


def test_an_erasure_drops_the_users_earlier_facts_but_not_later_ones() -> None:
    p = plan(
        (ENRICHED, enriched("m1", "u1")),
        (FEEDBACK, feedback("f1", "u1")),
        (ENRICHED, enriched("m2", "u2")),
        (ERASURE, erasure("u1")),
        (ENRICHED, enriched("m3", "u1")),
    )
    assert p.erasures == {"u1": "r1"}
    assert set(p.messages) == {"m2", "m3"}
    assert p.feedback == {}


@pytest.mark.parametrize(
    ("topic", "value", "code", "field"),
    [
        (ENRICHED, b"\xff\xfe garbage", "ERROR_CODE_UNDECODABLE", ""),
        (ENRICHED, b"", "ERROR_CODE_UNDECODABLE", ""),
        (ENRICHED, enriched(message_id=""), "ERROR_CODE_SCHEMA_INVALID", "message.message_id"),
        (ENRICHED, enriched(user_id="x" * 300), "ERROR_CODE_SCHEMA_INVALID", "message.user_id"),
        (ENRICHED, enriched(timestamp=False), "ERROR_CODE_TIMESTAMP_MISSING", "message.timestamp"),
        (FEEDBACK, feedback(kind=0), "ERROR_CODE_FIELD_INVALID", "type"),
        (FEEDBACK, feedback(kind=7), "ERROR_CODE_FIELD_INVALID", "type"),
        (FEEDBACK, feedback(feedback_id=""), "ERROR_CODE_SCHEMA_INVALID", "feedback_id"),
        (FEEDBACK, feedback(user_id=""), "ERROR_CODE_USER_ID_MISSING", "user_id"),
        (FEEDBACK, feedback(campaign_id=""), "ERROR_CODE_SCHEMA_INVALID", "campaign_id"),
        (FEEDBACK, feedback(timestamp=False), "ERROR_CODE_TIMESTAMP_MISSING", "timestamp"),
        (
            ERASURE,
            F.ErasureRequest(request_id="r").SerializeToString(),
            "ERROR_CODE_USER_ID_MISSING",
            "user_id",
        ),
        ("other", enriched(), "ERROR_CODE_PROCESSING_FAILED", ""),
        (
            ENRICHED,
            enriched(raw_seconds=253_402_300_800),
            "ERROR_CODE_TIMESTAMP_INVALID",
            "message.timestamp",
        ),
        # Years 1 and 2200, and before 1970: valid protobuf Timestamps, not event times.
        (
            ENRICHED,
            enriched(raw_seconds=-62_135_596_800),
            "ERROR_CODE_TIMESTAMP_INVALID",
            "message.timestamp",
        ),
        (
            ENRICHED,
            enriched(raw_seconds=7_258_118_400),
            "ERROR_CODE_TIMESTAMP_INVALID",
            "message.timestamp",
        ),
        (FEEDBACK, feedback(raw_seconds=-1), "ERROR_CODE_TIMESTAMP_INVALID", "timestamp"),
        (FEEDBACK, feedback(raw_seconds=2**62), "ERROR_CODE_TIMESTAMP_INVALID", "timestamp"),
        (ERASURE, erasure("u9", raw_seconds=-1), "ERROR_CODE_TIMESTAMP_INVALID", "requested_at"),
        (
            ERASURE,
            erasure("u9", raw_seconds=253_402_300_800),
            "ERROR_CODE_TIMESTAMP_INVALID",
            "requested_at",
        ),
        (ENRICHED, enriched(user_id="u\x00"), "ERROR_CODE_FIELD_INVALID", "message.user_id"),
        (ENRICHED, enriched(intents=("a\x00b",)), "ERROR_CODE_FIELD_INVALID", "intents"),
        (FEEDBACK, feedback(campaign_id="c\x00"), "ERROR_CODE_FIELD_INVALID", "campaign_id"),
        (ERASURE, erasure("u\x00"), "ERROR_CODE_FIELD_INVALID", "user_id"),
    ],
)
def test_unusable_records_are_rejected_with_a_reason(
    topic: str, value: bytes, code: str, field: str
) -> None:
    p = plan((topic, value), (ENRICHED, enriched("ok")))
    assert set(p.messages) == {"ok"}
    ((msg, rejection),) = p.rejected
    assert msg.value() == value
    assert (E.ErrorCode.Name(rejection.code), rejection.field) == (code, field)  # type: ignore[arg-type]
    assert rejection.detail


class FakeStore:
    def __init__(self, fail: bool = False, refuse: str | None = None) -> None:
        self.fail, self.refuse = fail, refuse
        self.calls: list[tuple[Any, ...]] = []
        self.ledgers: list[dict[str, Any]] = []

    def write(
        self,
        messages: Any,
        feedback: Any,
        erasures: Any = (),
        warehouse: Any = None,
        ledger: Any = None,
    ) -> Any:
        if self.fail:
            raise RetryableError("postgres: down")
        if self.refuse in {m.message_id for m in messages}:
            raise psycopg.DataError("invalid byte sequence")
        self.calls.append((messages, feedback, erasures, warehouse))
        self.ledgers.append(ledger or {})
        return analytics.WriteResult(len(messages), len(feedback), 0, 0, 1, 1)


class ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | str | None = None) -> None:
        self.records.append((topic, value))


def settings() -> Settings:
    topics = Topics(enriched=ENRICHED, feedback=FEEDBACK, erasure=ERASURE, dlq="dlq")
    base = Settings()
    return base.model_copy(update={"kafka": base.kafka.model_copy(update={"topics": topics})})


def test_the_handler_writes_then_dead_letters_and_signals_erasures() -> None:
    store, sink, erased = FakeStore(), ListSink(), []
    handle = service.build_handler(settings(), store, sink, lambda: erased.append(1))  # type: ignore[arg-type]
    handle(batch((ENRICHED, enriched()), (FEEDBACK, b"junk"), (ERASURE, erasure("u9"))))
    ((messages, feedbacks, erasures, warehouse),) = store.calls
    assert [m.message_id for m in messages] == ["m1"] and feedbacks == []
    assert erasures == ["u9"] and warehouse.startswith("sqlite:")
    # The erasure goes to the ledger too, with its request id and a time.
    ((request_id, erased_at),) = store.ledgers[0].values()
    assert list(store.ledgers[0]) == ["u9"] and request_id == "r1" and erased_at.tzinfo
    assert [t for t, _ in sink.records] == ["dlq"]
    assert E.DeadLetter.FromString(sink.records[0][1]).original_value == b"junk"
    assert erased == [1]


def test_a_store_outage_produces_no_dead_letter_before_the_batch_succeeds() -> None:
    store, sink = FakeStore(fail=True), ListSink()
    handle = service.build_handler(settings(), store, sink)  # type: ignore[arg-type]
    with pytest.raises(RetryableError):
        handle(batch((ENRICHED, enriched()), (FEEDBACK, b"junk")))
    assert sink.records == []


def test_a_fact_postgres_refuses_is_dead_lettered_and_the_rest_written() -> None:
    store, sink = FakeStore(refuse="bad"), ListSink()
    handle = service.build_handler(settings(), store, sink)  # type: ignore[arg-type]
    poison = enriched("bad")
    handle(batch((ENRICHED, enriched("m1")), (ENRICHED, poison), (FEEDBACK, feedback("f1"))))
    written = [(len(m), len(f), list(e)) for m, f, e, _ in store.calls]
    # The erasures (none), then each fact alone: m1, f1; "bad" refused and dead-lettered.
    assert written == [(0, 0, []), (1, 0, []), (0, 1, [])]
    ((topic, value),) = sink.records
    dead = E.DeadLetter.FromString(value)
    assert topic == "dlq" and dead.original_value == poison
    assert E.ErrorCode.Name(dead.code) == "ERROR_CODE_PROCESSING_FAILED"
    assert "invalid byte sequence" in dead.detail


def test_charts_are_pngs_with_and_without_data() -> None:
    rows = [
        {
            "campaign_id": f"c{i}",
            "messages": 10 * i,
            "impressions": 100,
            "clicks": 7 * i,
            "conversions": i,
            "ctr": 0.07 * i,
            "conversion_rate": 1 / 7,
        }
        for i in range(1, 4)
    ]
    days = [date(2026, 11, d) for d in (20, 21, 22)]
    activity = [
        {"day": d, "channel": ch, "messages": 5, "active_users": 2}
        for d in days
        for ch in ("chat", "")
    ]
    totals = [{"day": d, "messages": 10, "active_users": 3} for d in days]
    for png in (
        campaign_chart(rows),
        activity_chart(activity, totals),
        campaign_chart([]),
        activity_chart([], []),
    ):
        assert png.startswith(PNG) and len(png) > 2_000


def test_jsonable_writes_utc_iso_times_and_days() -> None:
    value = {"a": [datetime(2026, 1, 1, 12, tzinfo=UTC)], "d": date(2026, 1, 2), "n": 1}
    assert analytics.jsonable(value) == {
        "a": ["2026-01-01T12:00:00+00:00"],
        "d": "2026-01-02",
        "n": 1,
    }


@pytest.fixture
def report_client(monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, list[str]]:
    """The report app with no PostgreSQL: the connection is a placeholder and the queries for
    one user or one campaign are fakes that record the id they were asked for."""
    asked: list[str] = []

    def user_engagement(conn: Any, user_id: str) -> dict[str, Any] | None:
        asked.append(user_id)
        return {"user_id": user_id, "messages": 1} if user_id == "u1" else None

    def campaign_daily(conn: Any, campaign_ids: list[str], since: Any) -> list[dict[str, Any]]:
        asked.extend(campaign_ids)
        return []

    monkeypatch.setattr(analytics, "user_engagement", user_engagement)
    monkeypatch.setattr(analytics, "campaign_daily", campaign_daily)
    reader = key_entry("reader", "read-key", ["analytics:read"])
    app = web.create_app(Settings(auth=AuthSettings.model_validate({"keys": [reader]})))
    app.dependency_overrides[web.connection] = lambda: object()
    return TestClient(app, headers={"X-API-Key": "read-key"}), asked


def test_report_path_ids_with_a_newline_or_an_encoded_slash_are_refused(
    report_client: tuple[TestClient, list[str]],
) -> None:
    client, asked = report_client
    assert client.get("/api/users/u1").json() == {"user_id": "u1", "messages": 1}
    assert client.get("/api/users/u2").status_code == 404
    assert client.get("/api/campaigns/c1/daily").json() == []
    assert asked == ["u1", "u2", "c1"]
    for path in ("/api/users/u1%0A", "/api/users/u1%0Ax", "/api/campaigns/c1%0A/daily"):
        assert client.get(path).status_code == 422, path
    # An encoded slash is a slash once decoded: no route has that many segments.
    for path in ("/api/users/u1%2Fx", "/api/campaigns/c1%2Fx/daily"):
        assert client.get(path).status_code == 404, path
    assert asked == ["u1", "u2", "c1"]
