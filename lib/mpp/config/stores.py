"""Store settings: Neo4j, PostgreSQL, Redis and Milvus endpoints, credentials and TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator


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
    # FLAT is exact and measured best on Milvus Lite up to 100k rows (mpp.stores.milvus_schema);
    # a full Milvus with millions of rows wants IVF_FLAT or HNSW.
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
