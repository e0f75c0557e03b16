"""Shared fixtures. Integration tests run against the local stack's real servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from mpp.config import Settings

if TYPE_CHECKING:
    from mpp.embedding import Embedder


# Test modules that run one after the other in one worker process, in the order collected
# (``make test`` runs pytest in workers, pytest-xdist): the batch jobs and the cluster's tests
# share the local Airflow, the release namespace of tests/cluster/test_release.py and the
# cluster's one node, and each of them loads the machine on its own.
TOGETHER = ("tests/batch/", "tests/cluster/")


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or ``TOGETHER``'s one unit. Other
    modules share the stack's servers but nothing on them (topics, databases, collections and
    consumer groups of their own; outages staged with tests/forwarder.py, never by stopping a
    shared server), so they may run beside each other."""
    module = nodeid.split("::", 1)[0]
    return "batch+cluster" if module.startswith(TOGETHER) else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's module scheduling (a module's tests in one worker, for its module-scoped
    fixtures) with ``work_unit``'s units. Markers cannot name the units: pytest 9 no longer
    lets xdist rename a test's node id, which is how ``--dist loadgroup`` groups."""
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the MPP_ variables they set themselves."""
    import os

    for name in list(os.environ):
        if name.startswith("MPP_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """The local stack, started (or reused) once per test session."""
    from mpp.stack import Stack

    settings = Settings()
    Stack(settings).up(lambda message: None)
    yield settings


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The packaged model, loaded once per test session."""
    from mpp.embedding import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def embedder_1024(embedder: Embedder) -> Embedder:
    """The same model lifted to 1024 dimensions (it shares the loaded model)."""
    from mpp.embedding import Embedder

    return Embedder(project_to_dim=1024)


@pytest.fixture
def unique() -> str:
    """A short random suffix so that tests never share topics, groups or collections."""
    return uuid.uuid4().hex[:10]


def with_topics(settings: Settings, unique: str) -> Settings:
    """``settings`` with topics of their own (created), named after ``unique``."""
    from mpp.kafka.testing import isolated_kafka

    return settings.model_copy(update={"kafka": isolated_kafka(settings.kafka, unique)})


@contextmanager
def with_database(settings: Settings, unique: str) -> Iterator[Settings]:
    """``settings`` with a PostgreSQL database of their own, migrated; dropped afterwards."""
    import psycopg

    from mpp.db import migrate

    name = f"mpp_test_{unique}"
    admin = settings.postgres.conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    postgres = settings.postgres.model_copy(update={"database": name})
    migrate(postgres.conninfo())
    try:
        yield settings.model_copy(update={"postgres": postgres})
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def topic_settings(stack_settings: Settings, unique: str) -> Iterator[Settings]:
    """The stack's settings with topics of this test's own (created), so tests never share;
    deleted afterwards (a whole run would otherwise leave the broker a thousand topics)."""
    from mpp.kafka.testing import drop_topics

    settings = with_topics(stack_settings, unique)
    yield settings
    drop_topics(settings.kafka)


@pytest.fixture
def database_settings(topic_settings: Settings, unique: str) -> Iterator[Settings]:
    """``topic_settings`` plus a PostgreSQL database of this test's own, migrated, dropped after.

    Aggregates over whole tables (analytics, popularity) can then be compared exactly.
    """
    with with_database(topic_settings, unique) as settings:
        yield settings
