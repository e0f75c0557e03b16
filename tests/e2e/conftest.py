from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mpp.config import Settings
from tests.e2e.pipeline import Pipeline, isolated_run
from tests.observability import jaeger, prometheus

__all__ = ["jaeger", "pipeline", "prometheus"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture
def pipeline(topic_settings: Settings, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    with isolated_run(topic_settings, unique, tmp_path) as run:
        yield run
