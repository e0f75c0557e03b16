"""Fixtures of the cluster tests: one set of topics, database and campaign catalog per module,
shared by its tests (one Helm release serves them all)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from mpp.catalog import default_campaigns_path, parse_campaigns, upsert_campaigns
from mpp.config import Settings
from tests.conftest import with_database, with_topics


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def module_unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def database_settings_module(stack_settings: Settings, module_unique: str) -> Iterator[Settings]:
    """Topics and a migrated database of the module's own, with the default campaigns."""
    with with_database(with_topics(stack_settings, module_unique), module_unique) as settings:
        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
            upsert_campaigns(conn, parse_campaigns(default_campaigns_path()))
        yield settings
