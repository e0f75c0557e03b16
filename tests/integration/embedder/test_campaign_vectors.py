"""The embedder writes the campaign catalog's vectors to Milvus for the recommender."""

from __future__ import annotations

import time

from mpp_embedder.service import build_worker

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.embedding import Embedder
from mpp.stores import milvus_client
from mpp.stores.milvus import MilvusVectorStore


def test_campaign_vectors_are_written_and_searchable(stack_settings: Settings, unique: str) -> None:
    milvus = stack_settings.milvus.model_copy(
        update={
            "messages_collection": f"messages_{unique}",
            "campaigns_collection": f"campaigns_{unique}",
        }
    )
    settings = stack_settings.model_copy(update={"milvus": milvus})
    campaigns = parse_campaigns(default_campaigns_path())
    embedder = Embedder.from_settings(settings.embedder)
    client = milvus_client(settings)
    try:
        build_worker(settings, embedder=embedder, load_campaigns=lambda: campaigns)
        active = sorted(c.campaign_id for c in campaigns if c.active)
        deadline = time.monotonic() + 5
        while True:  # Milvus Lite shows a write a few milliseconds after it returns
            rows = client.query(
                milvus.campaigns_collection,
                filter="",
                output_fields=["campaign_id", "model"],
                limit=100,
            )
            if len(rows) >= len(active) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sorted(r["campaign_id"] for r in rows) == active
        assert {r["model"] for r in rows} == {embedder.model_id}
        (query,) = embedder.encode(["any cheap flights to the beach for our summer holiday?"])
        hits = MilvusVectorStore(settings).search_campaigns(query.tolist(), 3)
        assert hits[0].campaign_id == "travel-summer"
    finally:
        for name in (milvus.messages_collection, milvus.campaigns_collection):
            if client.has_collection(name):
                client.drop_collection(name)
