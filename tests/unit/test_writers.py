"""The writers' pure logic: batch planning, dead letters, row building, error classes."""

from __future__ import annotations

from types import ModuleType

import grpc
import numpy as np
import pytest
from confluent_kafka import Message
from mpp_graph_writer import service as graph_service
from mpp_vector_writer import service as vector_service
from neo4j.exceptions import ClientError, ServiceUnavailable, SessionExpired, TransientError
from pymilvus.exceptions import MilvusException, ParamError

from mpp.deadletters import dead_letter
from mpp.stores import milvus_errors, milvus_schema, neo4j
from mpp.stores.graph_rows import ROW, CampaignEdge, MergeBatch, MessageNode, merge_row, seen_spans
from mpp.stores.vector_rows import MessageVector, chunks
from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F
from tests.unit.records import enriched

ENRICHED, ERASURE = "enriched", "erasure"
SERVICES = [vector_service, graph_service]


def erasure(user_id: str, request_id: str = "r") -> bytes:
    return F.ErasureRequest(user_id=user_id, request_id=request_id).SerializeToString()


def record(topic: str, value: bytes, offset: int = 0, key: bytes = b"k") -> Message:
    return Message(
        topic=topic, partition=1, offset=offset, key=key, value=value, headers=[("h", b"v")]
    )


def batch(*items: tuple[str, bytes]) -> list[Message]:
    return [record(topic, value, offset=i) for i, (topic, value) in enumerate(items)]


@pytest.mark.parametrize("service", SERVICES)
def test_duplicates_in_a_batch_keep_the_last_version(service: ModuleType) -> None:
    plan = service.plan_batch(
        batch(
            (ENRICHED, enriched("m1", "u1", "first")),
            (ENRICHED, enriched("m2", "u1")),
            (ENRICHED, enriched("m1", "u1", "second")),
        ),
        ENRICHED,
        ERASURE,
    )
    assert list(plan.messages) == ["m2", "m1"]
    assert plan.messages["m1"].message.text == "second"
    assert plan.rejected == [] and plan.erasures == {}


@pytest.mark.parametrize("service", SERVICES)
def test_an_erasure_forgets_the_users_earlier_messages_only(service: ModuleType) -> None:
    plan = service.plan_batch(
        batch(
            (ENRICHED, enriched("m1", "u1")),
            (ENRICHED, enriched("m2", "u2")),
            (ERASURE, erasure("u1", "r1")),
            (ENRICHED, enriched("m3", "u1")),
            (ERASURE, erasure("u1", "r2")),
            (ENRICHED, enriched("m4", "u1")),
        ),
        ENRICHED,
        ERASURE,
    )
    # Erasures run first, then the messages that came after the last request.
    assert plan.erasures == {"u1": "r2"}
    assert list(plan.messages) == ["m2", "m4"]


@pytest.mark.parametrize("service", SERVICES)
def test_records_that_cannot_be_used_are_rejected_with_a_reason(service: ModuleType) -> None:
    no_ids = E.EnrichedMessage(model="x").SerializeToString()
    plan = service.plan_batch(
        batch(
            (ENRICHED, b"\xff\xfe garbage"),
            (ENRICHED, b""),
            (ENRICHED, no_ids),
            (ERASURE, b"\xff"),
            (ERASURE, F.ErasureRequest(request_id="r").SerializeToString()),
            ("elsewhere", enriched("m1", "u1")),
            (ENRICHED, enriched("ok", "u1")),
        ),
        ENRICHED,
        ERASURE,
    )
    got = [(E.ErrorCode.Name(r.code), r.field) for _, r in plan.rejected]
    assert got == [
        ("ERROR_CODE_UNDECODABLE", ""),
        ("ERROR_CODE_UNDECODABLE", ""),
        ("ERROR_CODE_SCHEMA_INVALID", "message.message_id"),
        ("ERROR_CODE_UNDECODABLE", ""),
        ("ERROR_CODE_USER_ID_MISSING", "user_id"),
        ("ERROR_CODE_PROCESSING_FAILED", ""),
    ]
    assert "ErasureRequest" in plan.rejected[3][1].detail
    assert list(plan.messages) == ["ok"]


def test_only_the_vector_writer_needs_a_consistent_embedding() -> None:
    message = E.EnrichedMessage.FromString(enriched("m1", "u1", dim=4))
    message.dimension = 8
    wrong = message.SerializeToString()
    vector_plan = vector_service.plan_batch(batch((ENRICHED, wrong)), ENRICHED, ERASURE)
    assert [(r.field, r.detail) for _, r in vector_plan.rejected] == [
        ("embedding", "embedding has 4 values but dimension says 8")
    ]
    graph_plan = graph_service.plan_batch(batch((ENRICHED, wrong)), ENRICHED, ERASURE)
    assert list(graph_plan.messages) == ["m1"]


@pytest.mark.parametrize("service", SERVICES)
def test_a_dead_letter_keeps_the_record_whole(service: ModuleType) -> None:
    msg = record(ENRICHED, b"\xff bad", offset=42, key=b"user-7")
    plan = service.plan_batch([msg], ENRICHED, ERASURE)
    ((rejected_msg, rejection),) = plan.rejected
    assert rejected_msg is msg
    dead = dead_letter(rejected_msg, rejection, "svc")
    assert dead.original_value == b"\xff bad" and dead.original_key == b"user-7"
    assert dict(dead.original_headers) == {"h": "v"}
    assert (dead.source.topic, dead.source.partition, dead.source.offset) == (ENRICHED, 1, 42)
    assert dead.code == E.ERROR_CODE_UNDECODABLE and "EnrichedMessage" in dead.detail


def test_message_vector_row_matches_the_collection_schema() -> None:
    message = E.EnrichedMessage.FromString(enriched("m1", "u1"))
    message.message.campaign_id = "c9"
    message.intents.insert(0, E.IntentScore(intent="refund", score=0.7))
    row = MessageVector.from_enriched(message).row()
    assert set(row) == {"message_id", "embedding", *milvus_schema.MESSAGE_SCALARS}
    assert row["ts"] == 1_780_000_000_123
    assert row["top_intent"] == "refund" and row["top_intent_score"] == pytest.approx(0.7)
    assert row["campaign_id"] == "c9" and row["channel"] == "chat" and row["model"] == "m"
    assert row["embedding"].dtype == np.float32 and row["embedding"].tolist() == [0.5] * 4


def test_message_node_skips_unknown_and_keeps_each_campaigns_best_link() -> None:
    message = E.EnrichedMessage.FromString(enriched("m1", "u1"))
    del message.intents[:]
    message.intents.extend(
        [E.IntentScore(intent="unknown", score=0.3), E.IntentScore(intent="refund", score=0.2)]
    )
    message.campaigns.extend(
        [
            E.CampaignLink(campaign_id="c1", score=1.0, source=E.CAMPAIGN_LINK_SOURCE_EVENT),
            E.CampaignLink(campaign_id="c2", score=0.5, source=E.CAMPAIGN_LINK_SOURCE_SIMILARITY),
            E.CampaignLink(campaign_id="c1", score=0.4, source=E.CAMPAIGN_LINK_SOURCE_SIMILARITY),
        ]
    )
    node = MessageNode.from_enriched(message)
    assert [(name, round(score, 4)) for name, score in node.intents] == [("refund", 0.2)]
    assert node.campaigns == (
        CampaignEdge("c1", 1.0, "event"),
        CampaignEdge("c2", 0.5, "similarity"),
    )
    row = node.row()
    assert row == merge_row(message)
    assert MessageNode.from_row(row) == node
    assert row[ROW.index("ts")] == 1_780_000_000_123
    assert row[ROW.index("campaigns")][0] == ["c1", 1.0, "event"]
    assert row[ROW.index("intents")] == [["refund", pytest.approx(0.2)]]


def test_a_merge_batch_keeps_each_messages_last_version_as_columns() -> None:
    first = E.EnrichedMessage.FromString(enriched("m1", "u1"))
    other = E.EnrichedMessage.FromString(enriched("m2", "u2"))
    again = E.EnrichedMessage.FromString(enriched("m1", "u1"))
    again.message.text = "edited"
    batch = MergeBatch.of_enriched([first, other, again])
    assert batch.size == 2
    params = batch.parameters
    assert set(params) == {"users", *ROW}
    assert params["message_id"] == ["m1", "m2"] and params["text"][0] == "edited"
    assert params["users"] == [
        {"id": "u1", "first": 1_780_000_000_123, "last": 1_780_000_000_123},
        {"id": "u2", "first": 1_780_000_000_123, "last": 1_780_000_000_123},
    ]
    # The driver writes repr() of the parameters into its debug line: each list is summed up.
    assert repr(params["text"]) == "<2 values>"
    # Built from nodes, the same batch.
    assert MergeBatch.of([MessageNode.from_enriched(e) for e in (first, other, again)]) == batch
    assert MergeBatch.of_enriched([]).size == 0


def test_seen_spans_give_each_user_the_batchs_earliest_and_latest_time() -> None:
    assert seen_spans(["a", "b", "a", "a", "a"], [5, 7, 2, 9, 4]) == [
        {"id": "a", "first": 2, "last": 9},
        {"id": "b", "first": 7, "last": 7},
    ]


def test_chunks_bound_the_bytes_of_each_request() -> None:
    rows = list(range(10))
    # 4 dims x 4 bytes = 16 bytes a row: 50 bytes hold 3 rows.
    assert [list(c) for c in chunks(rows, 4, 50)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [list(c) for c in chunks(rows, 1024, 10)] == [[r] for r in rows]


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def test_milvus_failures_are_classified() -> None:
    assert milvus_errors.is_transient(MilvusException(code=2, message="Fail connecting"))
    assert milvus_errors.is_transient(
        MilvusException(code=grpc.StatusCode.UNAVAILABLE, message="x")
    )
    assert milvus_errors.is_transient(
        MilvusException(code=1, message="[upsert] Retry timeout: 10s")
    )
    assert milvus_errors.is_transient(_RpcError(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert not milvus_errors.is_transient(_RpcError(grpc.StatusCode.INVALID_ARGUMENT))
    assert not milvus_errors.is_transient(ParamError(message="bad dim"))
    assert not milvus_errors.is_transient(MilvusException(code=65535, message="float data"))
    assert not milvus_errors.is_transient(ValueError("x"))


def test_neo4j_failures_are_classified() -> None:
    assert neo4j.is_transient(ServiceUnavailable("down"))
    assert neo4j.is_transient(SessionExpired("gone"))
    assert neo4j.is_transient(TransientError("deadlock"))
    assert not neo4j.is_transient(ClientError("syntax"))
    assert not neo4j.is_transient(ValueError("x"))


def test_drop_erased_keeps_only_messages_after_the_users_erasure() -> None:
    from datetime import UTC, datetime

    from mpp.writers import drop_erased

    def message(message_id: str, user_id: str, ms: int) -> E.EnrichedMessage:
        m = E.EnrichedMessage()
        m.message.message_id, m.message.user_id = message_id, user_id
        m.message.timestamp.FromMilliseconds(ms)
        return m

    at = datetime.fromtimestamp(1_780_000_005, tz=UTC)
    messages = [
        message("before", "gone", 1_780_000_004_000),
        message("same-instant", "gone", 1_780_000_005_000),
        message("after", "gone", 1_780_000_006_000),
        message("other", "kept", 1_780_000_000_000),
    ]
    kept = drop_erased(messages, {"gone": at})
    assert [m.message.message_id for m in kept] == ["after", "other"]
    assert drop_erased(messages, {}) == messages


def test_plan_keeps_the_latest_requested_time_of_a_users_erasures() -> None:
    from datetime import UTC, datetime

    first, later = (
        F.ErasureRequest(user_id="u", request_id="a"),
        F.ErasureRequest(user_id="u", request_id="b"),
    )
    first.requested_at.FromMilliseconds(2_000)
    later.requested_at.FromMilliseconds(1_000)
    plan = vector_service.plan_batch(
        batch(("erasure", first.SerializeToString()), ("erasure", later.SerializeToString())),
        "enriched",
        "erasure",
    )
    assert plan.erased_at == {"u": datetime.fromtimestamp(2, tz=UTC)}


def _erasure_at(user_id: str, seconds: int) -> bytes:
    request = F.ErasureRequest(user_id=user_id, request_id="r")
    request.requested_at.seconds = seconds  # unchecked, as a producer could send it
    return request.SerializeToString()


def _enriched_at(message_id: str, user_id: str, seconds: int) -> bytes:
    value = E.EnrichedMessage.FromString(enriched(message_id, user_id))
    value.message.timestamp.seconds = seconds
    return value.SerializeToString()


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    "seconds", [-1, -62_135_596_800, 7_258_118_400, 253_402_300_800, 2**62, -(2**62)]
)
def test_times_out_of_range_are_dead_lettered_not_raised(service: ModuleType, seconds: int) -> None:
    bad_erasure, bad_message = _erasure_at("u9", seconds), _enriched_at("m9", "u2", seconds)
    plan = service.plan_batch(
        batch(
            (ENRICHED, enriched("m1", "u1")),
            (ERASURE, bad_erasure),
            (ENRICHED, bad_message),
            (ERASURE, erasure("u3")),
        ),
        ENRICHED,
        ERASURE,
    )
    # The bad erasure changes nothing: u1's message stays, u9 is not erased.
    assert list(plan.messages) == ["m1"] and list(plan.erasures) == ["u3"]
    rejected = [(m.value(), r.code, r.field) for m, r in plan.rejected]
    assert rejected == [
        (bad_erasure, E.ERROR_CODE_TIMESTAMP_INVALID, "requested_at"),
        (bad_message, E.ERROR_CODE_TIMESTAMP_INVALID, "message.timestamp"),
    ]


def test_graph_reads_drop_missing_links_and_read_missing_scores_as_zero() -> None:
    # OPTIONAL MATCH gives [null, null] for a message without intents or campaigns.
    pairs = neo4j._pairs([[None, None], ["buy", None], ["c1", 0.5]])
    assert pairs == (("buy", 0.0), ("c1", 0.5))
