from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mpp.config import Settings
from tests.e2e.pipeline import Pipeline


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture
def pipeline(topic_settings: Settings, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    milvus = topic_settings.milvus.model_copy(
        update={
            "messages_collection": f"messages_{unique}",
            "campaigns_collection": f"campaigns_{unique}",
        }
    )
    kafka = topic_settings.kafka.model_copy(update={"group_prefix": f"e2e-{unique}"})
    settings = topic_settings.model_copy(update={"milvus": milvus, "kafka": kafka})
    run = Pipeline(settings=settings, run_id=f"r{unique}", home=tmp_path)
    try:
        yield run
    finally:
        run.stop()
        run.cleanup()
