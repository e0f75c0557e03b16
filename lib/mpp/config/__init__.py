"""One settings object for every service, the CLI and the local stack (this package).

Every endpoint and credential comes from environment variables with the prefix ``MPP_``;
nested sections use a double underscore: ``MPP_KAFKA__BOOTSTRAP_SERVERS``,
``MPP_NEO4J__PASSWORD``, ``MPP_POSTGRES__DSN``. A ``.env`` file in the working directory is
read too. The defaults point at the local stack on loopback (``mpp stack up``); a production
deployment sets the same variables (the Helm chart does) and changes no code.

Secrets are ``SecretStr`` so that they never appear in logs or ``repr``.

The sections live in modules of their own (``kafka``, ``stores``, ``services``, ``security``,
``addresses``); ``Settings`` here gathers them, and every name is importable from
``mpp.config`` itself.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mpp.config.addresses import LOCAL_HOSTS, host_port, is_loopback
from mpp.config.kafka import KAFKA_LOGGER, KafkaSettings, Topics
from mpp.config.security import (
    DEVELOPMENT_HMAC_KEY,
    SCOPES,
    ApiKeySpec,
    AuthSettings,
    IdSettings,
    Scope,
)
from mpp.config.services import (
    AnalyticsSettings,
    EmbedderSettings,
    GrpcSettings,
    HttpSettings,
    IngestSettings,
    RecommenderSettings,
    StackSettings,
    WarehouseSettings,
    WriterSettings,
)
from mpp.config.stores import MilvusSettings, Neo4jSettings, PostgresSettings, RedisSettings

__all__ = [
    "DEVELOPMENT_HMAC_KEY",
    "KAFKA_LOGGER",
    "LOCAL_HOSTS",
    "SCOPES",
    "AnalyticsSettings",
    "ApiKeySpec",
    "AuthSettings",
    "EmbedderSettings",
    "GrpcSettings",
    "HttpSettings",
    "IdSettings",
    "IngestSettings",
    "KafkaSettings",
    "MilvusSettings",
    "Neo4jSettings",
    "PostgresSettings",
    "RecommenderSettings",
    "RedisSettings",
    "Scope",
    "Settings",
    "StackSettings",
    "Topics",
    "WarehouseSettings",
    "WriterSettings",
    "get_settings",
    "host_port",
    "is_loopback",
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MPP_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    environment: Literal["development", "test", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    kafka: KafkaSettings = KafkaSettings()
    neo4j: Neo4jSettings = Neo4jSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    milvus: MilvusSettings = MilvusSettings()
    grpc: GrpcSettings = GrpcSettings()
    http: HttpSettings = HttpSettings()
    ingest: IngestSettings = IngestSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    vector_writer: WriterSettings = WriterSettings()
    graph_writer: WriterSettings = WriterSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    recommender: RecommenderSettings = RecommenderSettings()
    auth: AuthSettings = AuthSettings()
    ids: IdSettings = IdSettings()
    stack: StackSettings = StackSettings()

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        missing = []
        if self.neo4j.password is None:
            missing.append("MPP_NEO4J__PASSWORD")
        if self.postgres.password is None:
            missing.append("MPP_POSTGRES__PASSWORD")
        if missing:
            raise ValueError(
                "environment=production refuses to run without credentials: set "
                + ", ".join(missing)
            )
        return self

    @model_validator(mode="after")
    def _production_needs_ids_key(self) -> Settings:
        if (
            self.environment == "production"
            and self.ids.hmac_key.get_secret_value() == DEVELOPMENT_HMAC_KEY
        ):
            raise ValueError(
                "environment=production refuses the development ids key: set MPP_IDS__HMAC_KEY "
                "(a random secret of at least 16 bytes, kept in a Secret)"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
