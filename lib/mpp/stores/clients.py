"""Clients for the platform's stores, built from the one settings object.

Each function returns a plain, configured client of the store's own library; the store
classes (``mpp.stores.milvus.MilvusVectorStore``, ``mpp.stores.neo4j.Neo4jGraphStore``...)
wrap these with the platform's rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import neo4j
import psycopg
import redis

from mpp.config import Settings

if TYPE_CHECKING:
    # pymilvus is the milvus extra's (pyproject.toml): the services without vectors (ingest,
    # graph-writer, analytics) have no pymilvus, and import this module all the same.
    from pymilvus import MilvusClient


def neo4j_driver(settings: Settings, **overrides: Any) -> neo4j.Driver:
    """The driver for ``settings.neo4j``; ``overrides`` are driver options (seconds) that
    replace the defaults, such as the recommender's shorter ``connection_timeout``."""
    cfg = settings.neo4j
    uri, tls = cfg.driver_args()
    options: dict[str, Any] = {
        "auth": cfg.auth(),
        "max_connection_pool_size": cfg.max_connection_pool_size,
        "connection_timeout": 5.0,
        **overrides,
    }
    return neo4j.GraphDatabase.driver(uri, **options, **tls)


def postgres_connect(settings: Settings, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(settings.postgres.conninfo(), **kwargs)


def redis_client(settings: Settings) -> redis.Redis:
    cfg = settings.redis
    return redis.Redis.from_url(cfg.url, **cfg.client_kwargs())


def milvus_client(settings: Settings) -> MilvusClient:
    from pymilvus import MilvusClient

    cfg = settings.milvus
    return MilvusClient(
        uri=cfg.uri,
        token=cfg.token.get_secret_value() if cfg.token else "",
        db_name=cfg.db_name,
        timeout=cfg.timeout_s,
        # pymilvus pings every 10 s even when idle; Milvus (Lite too) answers an idle client's
        # pings with GOAWAY "too_many_pings" after a few minutes and the next call fails.
        # Ping only while calls are in flight.
        grpc_options={
            "grpc.keepalive_time_ms": 60_000,
            "grpc.keepalive_permit_without_calls": 0,
        },
        **cfg.client_kwargs(),
    )
