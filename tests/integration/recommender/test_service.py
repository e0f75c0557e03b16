"""``python -m mpp_recommender`` as a process on the real servers: both front doors, the same
answer, authentication, validation errors naming the field, feedback and erasure through both,
health, reflection, metrics and OpenAPI without a key (the limits: test_service_limits.py)."""

from __future__ import annotations

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG

from .process import KEY, Running, errors
from .world import TRAVEL, World


def test_grpc_and_http_give_the_same_answer_behind_authentication(
    world: World, service: Running
) -> None:
    user = world.user("both")
    world.write(world.enriched(user, TRAVEL, 1_780_000_000_000))
    channel = grpc.insecure_channel(service.grpc_target)
    stub = RG.RecommenderStub(channel)
    auth = (("authorization", f"Bearer {KEY}"),)

    # gRPC: no token, a wrong one, then the right one.
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        with pytest.raises(grpc.RpcError) as denied:
            stub.Recommend(R.RecommendRequest(user_id=user, limit=5), metadata=metadata)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answer = stub.Recommend(R.RecommendRequest(user_id=user, limit=5), metadata=auth)
    assert answer.items[0].campaign_id == "travel-summer" and answer.strategy == "personalized"
    assert any(r.message_id for r in answer.items[0].reasons)

    # HTTP: the same answer (from the cache now), with either header form.
    url = f"{service.http}/recommendations/{user}"
    assert httpx.get(url, params={"limit": 5}).status_code == 401
    assert "missing API key" in errors(httpx.get(url, params={"limit": 5}))["X-API-Key"]
    assert httpx.get(url, headers={"X-API-Key": "nope"}).status_code == 401
    by_key = httpx.get(url, params={"limit": 5}, headers={"X-API-Key": KEY})
    by_bearer = httpx.get(url, params={"limit": 5}, headers={"Authorization": f"Bearer {KEY}"})
    assert by_key.status_code == by_bearer.status_code == 200
    body = by_key.json()
    assert body["recommendation_id"] == answer.recommendation_id and body["cached"] is True
    assert [i["campaign_id"] for i in body["items"]] == [i.campaign_id for i in answer.items]
    assert body["items"][0]["reasons"][0]["detail"]

    # Bad input: the field and the fix, never a crash.
    with pytest.raises(grpc.RpcError) as bad:
        stub.Recommend(R.RecommendRequest(user_id="bad user!", limit=5), metadata=auth)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details().startswith("user_id:")
    with pytest.raises(grpc.RpcError) as bad_limit:
        stub.Recommend(R.RecommendRequest(user_id=user, limit=101), metadata=auth)
    assert "limit" in bad_limit.value.details() and "1-100" in bad_limit.value.details()
    headers = {"X-API-Key": KEY}
    too_many = httpx.get(url, params={"limit": 500}, headers=headers)
    assert too_many.status_code == 422 and "limit" in errors(too_many)
    not_a_number = httpx.get(url, params={"limit": "ten"}, headers=headers)
    assert "ten" in errors(not_a_number)["limit"]
    bad_user = httpx.get(f"{service.http}/recommendations/bad%20user!", headers=headers)
    assert bad_user.status_code == 422 and "letters, digits" in errors(bad_user)["user_id"]
    bad_locale = httpx.get(url, params={"locale": "english!"}, headers=headers)
    assert bad_locale.status_code == 422 and "BCP 47" in errors(bad_locale)["locale"]
    with pytest.raises(grpc.RpcError) as bad_channel:
        stub.Recommend(R.RecommendRequest(user_id=user, channel="In App!"), metadata=auth)
    assert "channel" in bad_channel.value.details()
    no_type = httpx.post(
        f"{service.http}/feedback", json={"user_id": user, "campaign_id": "x"}, headers=headers
    )
    assert no_type.status_code == 422 and "type" in errors(no_type)
    wrong = httpx.post(
        f"{service.http}/feedback",
        json={"user_id": user, "campaign_id": "book-club", "type": "like", "extra": 1},
        headers=headers,
    )
    assert set(errors(wrong)) == {"type", "extra"}
    not_json = httpx.post(f"{service.http}/feedback", content=b"{oops", headers=headers)
    assert not_json.status_code == 422

    # Feedback through both doors.
    sent = httpx.post(
        f"{service.http}/feedback",
        json={
            "user_id": user,
            "campaign_id": "travel-summer",
            "type": "dismissal",
            "timestamp": "2026-06-01T10:00:00Z",
            "recommendation_id": answer.recommendation_id,
        },
        headers=headers,
    )
    assert sent.status_code == 200 and sent.json()["feedback_id"].startswith("f-")
    after = httpx.get(url, params={"limit": 5}, headers=headers).json()
    assert "travel-summer" not in [i["campaign_id"] for i in after["items"]]
    event = F.FeedbackEvent(user_id=user, campaign_id="book-club", type=F.FEEDBACK_TYPE_CLICK)
    recorded = stub.RecordFeedback(R.RecordFeedbackRequest(feedback=event), metadata=auth)
    assert recorded.feedback_id.startswith("f-")
    with pytest.raises(grpc.RpcError) as empty:
        stub.RecordFeedback(R.RecordFeedbackRequest(), metadata=auth)
    assert empty.value.details().startswith("feedback:")

    # Erasure through both doors.
    forgot = stub.ForgetUser(R.ForgetUserRequest(user_id=user, reason="test"), metadata=auth)
    assert {"postgres", "redis", "milvus", "neo4j"} <= set(forgot.erased_from)
    deleted = httpx.delete(f"{service.http}/users/{user}", headers=headers)
    assert deleted.status_code == 200 and "neo4j" in deleted.json()["erased_from"]
    channel.close()


def test_health_reflection_metrics_and_openapi_need_no_key(service: Running) -> None:
    channel = grpc.insecure_channel(service.grpc_target)
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "mpp.v1.Recommender"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    (reply,) = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in reply.list_services_response.service}
    assert {"mpp.v1.Recommender", "grpc.health.v1.Health"} <= names
    channel.close()

    assert httpx.get(f"{service.http}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.http}/readyz").json()
    assert ready["status"] == "ready" and ready["catalog_loaded"] is True
    assert ready["stores"]["milvus"] == "closed"
    metrics = httpx.get(f"{service.http}/metrics").text
    for family in ("mpp_requests_total", "mpp_cache_requests_total", "mpp_source_calls_total"):
        assert f"# TYPE {family} counter" in metrics
    assert "mpp_recommender_cache_total" not in metrics
    schema = httpx.get(f"{service.http}/openapi.json").json()
    assert {"/recommendations/{user_id}", "/feedback", "/users/{user_id}"} <= set(schema["paths"])
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]
