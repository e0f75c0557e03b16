"""The recommender with the whole streaming path as processes: conversations replayed as raw
events become that user's recommendations, and a new message changes them end to end."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mpp.config import Settings
from mpp.pipeline import STREAMING, Pipeline, log
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG
from tests.e2e.pipeline import isolated_run

TRAVEL = [
    "I'm flying to Lisbon next month and need a cheap hotel near the beach",
    "we want to book flights for our summer vacation abroad",
    "any tips for a beach holiday trip in Greece?",
    "I just booked a hotel for our trip to Rome",
]
OTHERS = {
    "movies": ["have you seen the new Marvel movie?", "we binge watched a whole TV series"],
    "music": ["I'm going to a concert of my favourite band", "what music do you listen to?"],
}
FOOD = [
    "I'm starving, let's order pizza and sushi for dinner tonight",
    "any good burger restaurant that delivers dinner?",
    "we ordered sushi again, the delivery was so fast",
]


@pytest.fixture
def run(database_settings: Settings, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    extra_env = {
        "MPP_POSTGRES__DATABASE": database_settings.postgres.database,
        "MPP_AUTH__ENABLED": "false",
        # This test checks what the answer says, not how fast a source is: on a machine
        # busy with other work, a source may miss the default 0.25 s deadline.
        "MPP_RECOMMENDER__MILVUS_TIMEOUT_S": "2",
        "MPP_RECOMMENDER__NEO4J_TIMEOUT_S": "2",
        "MPP_RECOMMENDER__POSTGRES_TIMEOUT_S": "2",
    }
    with isolated_run(database_settings, unique, tmp_path, extra_env, campaigns=True) as run:
        yield run


def event(user: str, text: str, ts_ms: int, message_id: str | None = None) -> bytes:
    body: dict[str, object] = {"user_id": user, "message": text, "timestamp": ts_ms}
    if message_id:
        body["message_id"] = message_id
    return json.dumps(body).encode()


def test_replayed_conversations_become_the_users_top_campaign_and_new_messages_count_in_2s(
    run: Pipeline,
) -> None:
    run.start(*STREAMING, "recommender")
    port = run.grpc_port
    stub = RG.RecommenderStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    traveller = f"{run.run_id}-traveller"
    start = int(time.time() * 1000) - 3_600_000
    records, keys = [], []
    for i, text in enumerate(TRAVEL):
        records.append(event(traveller, text, start + i * 60_000))
        keys.append(traveller.encode())
    for name, texts in OTHERS.items():
        user = f"{run.run_id}-{name}"
        for i, text in enumerate(texts):
            records.append(event(user, text, start + i * 60_000))
            keys.append(user.encode())
    run.produce(records, keys)
    run.wait_drained(timeout_s=180)

    answer = stub.Recommend(R.RecommendRequest(user_id=traveller, limit=5))
    assert answer.strategy == "personalized" and not answer.degraded_sources
    top = answer.items[0]
    assert top.campaign_id == "travel-summer"
    assert any(r.intent == "travel" for r in top.reasons)
    assert any(r.message_id for r in top.reasons if r.source == "milvus")
    for name in OTHERS:
        other = stub.Recommend(R.RecommendRequest(user_id=f"{run.run_id}-{name}", limit=5))
        assert other.items[0].campaign_id != "travel-summer"

    full = stub.Recommend(R.RecommendRequest(user_id=traveller, limit=15))
    food_before = [i.campaign_id for i in full.items].index("food-delivery")

    # Freshness, end to end: from producing the raw event until an answer reflects it.
    delays = []
    for i, text in enumerate(FOOD):
        message_id = f"{traveller}-new{i}"
        # The whole list (15 campaigns), so that the new message shows wherever it ranks.
        stub.Recommend(R.RecommendRequest(user_id=traveller, limit=15))  # cached now
        sent = time.perf_counter()
        run.produce(
            [event(traveller, text, int(time.time() * 1000), message_id)], [traveller.encode()]
        )
        while True:
            answer = stub.Recommend(R.RecommendRequest(user_id=traveller, limit=15))
            if any(r.message_id == message_id for item in answer.items for r in item.reasons):
                break
            assert time.perf_counter() - sent < 15, "the new message never reached the answer"
            time.sleep(0.01)
        delays.append(time.perf_counter() - sent)
    log(
        "freshness, raw event produced -> answer changed: "
        + ", ".join(f"{d:.2f} s" for d in delays)
    )
    # After three food messages, food delivery ranks higher than before, on their account.
    food_after = [i.campaign_id for i in answer.items].index("food-delivery")
    assert food_after < food_before and food_after <= 2, (food_before, food_after)
    food = answer.items[food_after]
    assert {f"{traveller}-new{i}" for i in range(3)} & {r.message_id for r in food.reasons}
