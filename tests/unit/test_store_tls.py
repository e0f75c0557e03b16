"""TLS settings of the stores (lib/mpp/config/) and the clients built from them
(lib/mpp/stores/clients.py, the recommender's own Neo4j driver and asyncio Redis pool).

No server: each client library is asked what it would do (libpq parses the conninfo, the
drivers and pools are built without connecting, pymilvus builds its gRPC channel), so a
setting the client ignores or refuses fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import neo4j
import psycopg.conninfo
import pytest
import redis

from mpp.config import MilvusSettings, Neo4jSettings, PostgresSettings, RedisSettings, Settings
from mpp.stores import neo4j_driver, redis_client

# A real PEM bundle that every Debian machine and image has (the content is not checked
# until a handshake; pymilvus reads the file when it builds its channel).
CA = Path("/etc/ssl/certs/ca-certificates.crt")


def settings(**sections: Any) -> Settings:
    return Settings(_env_file=None, **sections)  # type: ignore[call-arg]


# --- PostgreSQL: libpq's own parser reads what the services pass ---------------------------


def test_postgres_conninfo_carries_the_tls_files() -> None:
    pg = PostgresSettings(
        sslmode="verify-full",
        sslrootcert="/etc/mpp/postgres-tls/ca.crt",
        sslcert=Path("/etc/mpp/postgres-tls/tls.crt"),
        sslkey=Path("/etc/mpp/postgres-tls/tls.key"),
    )
    parsed = psycopg.conninfo.conninfo_to_dict(pg.conninfo())
    assert parsed["sslmode"] == "verify-full"
    assert parsed["sslrootcert"] == "/etc/mpp/postgres-tls/ca.crt"
    assert parsed["sslcert"] == "/etc/mpp/postgres-tls/tls.crt"
    assert parsed["sslkey"] == "/etc/mpp/postgres-tls/tls.key"


def test_postgres_system_cas_and_no_files_by_default() -> None:
    system = PostgresSettings(sslmode="verify-full", sslrootcert="system")
    assert psycopg.conninfo.conninfo_to_dict(system.conninfo())["sslrootcert"] == "system"
    plain = psycopg.conninfo.conninfo_to_dict(PostgresSettings().conninfo())
    assert not {"sslrootcert", "sslcert", "sslkey"} & set(plain)


def test_postgres_tls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPP_POSTGRES__SSLMODE", "verify-ca")
    monkeypatch.setenv("MPP_POSTGRES__SSLROOTCERT", "/ca.crt")
    parsed = psycopg.conninfo.conninfo_to_dict(Settings(_env_file=None).postgres.conninfo())  # type: ignore[call-arg]
    assert (parsed["sslmode"], parsed["sslrootcert"]) == ("verify-ca", "/ca.crt")


# --- Neo4j: the uri's scheme, or the plain scheme with a private CA --------------------------


def test_neo4j_s_scheme_alone_trusts_the_system_cas() -> None:
    cfg = Neo4jSettings(uri="neo4j+s://graph:7687")
    assert cfg.tls
    assert cfg.driver_args() == ("neo4j+s://graph:7687", {})
    driver = neo4j_driver(settings(neo4j=cfg))
    try:
        assert driver.encrypted is True
    finally:
        driver.close()


def test_neo4j_private_ca_is_given_to_the_driver() -> None:
    cfg = Neo4jSettings(uri="bolt+s://graph:7687", ca_file=CA)
    uri, kwargs = cfg.driver_args()
    assert uri == "bolt://graph:7687"
    assert kwargs["encrypted"] is True
    assert isinstance(kwargs["trusted_certificates"], neo4j.TrustCustomCAs)
    # The driver accepts exactly these (it refuses trust settings beside a +s scheme).
    driver = neo4j_driver(settings(neo4j=cfg))
    try:
        assert driver.encrypted is True
    finally:
        driver.close()


def test_the_recommenders_neo4j_driver_gets_the_ca_too() -> None:
    from mpp_recommender.sources import Neo4jSource

    source = Neo4jSource(
        settings(neo4j=Neo4jSettings(uri="neo4j+s://graph:7687", ca_file=CA)), dict
    )
    try:
        assert source.driver.encrypted is True
    finally:
        source.driver.close()


@pytest.mark.parametrize("uri", ["bolt://graph:7687", "neo4j://graph:7687"])
def test_neo4j_ca_without_a_tls_scheme_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match=r"bolt\+s:// or neo4j\+s://"):
        Neo4jSettings(uri=uri, ca_file=CA)


# --- Redis: rediss:// builds TLS connections that verify the server --------------------------


def test_rediss_client_verifies_with_the_files() -> None:
    cfg = RedisSettings(
        url="rediss://cache:6380/2",
        ssl_ca_file=Path("/etc/mpp/redis-tls/ca.crt"),
        ssl_cert_file=Path("/etc/mpp/redis-tls/tls.crt"),
        ssl_key_file=Path("/etc/mpp/redis-tls/tls.key"),
    )
    client = redis_client(settings(redis=cfg))
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_check_hostname"] is True
    assert kwargs["ssl_ca_certs"] == "/etc/mpp/redis-tls/ca.crt"
    assert kwargs["ssl_certfile"] == "/etc/mpp/redis-tls/tls.crt"
    assert kwargs["ssl_keyfile"] == "/etc/mpp/redis-tls/tls.key"
    # A connection object is built with them (its SSL context is made on connect).
    connection = pool.make_connection()
    assert connection.cert_reqs is not None and connection.ca_certs == kwargs["ssl_ca_certs"]


def test_the_recommenders_async_pool_uses_tls_too() -> None:
    import redis.asyncio.connection as aio
    from mpp_recommender.cache import RedisCache

    cache = RedisCache(settings(redis=RedisSettings(url="rediss://cache:6380/0")))
    assert cache._async.connection_pool.connection_class is aio.SSLConnection


def test_plain_redis_gets_no_ssl_arguments() -> None:
    client = redis_client(settings())
    assert client.connection_pool.connection_class is redis.Connection
    assert "ssl_cert_reqs" not in client.connection_pool.connection_kwargs


def test_redis_tls_files_without_rediss_are_refused() -> None:
    with pytest.raises(ValueError, match="use rediss://"):
        RedisSettings(url="redis://cache:6379/0", ssl_ca_file=CA)


# --- Milvus: https:// and pymilvus' TLS arguments ----------------------------------------


def test_milvus_one_way_tls_arguments_build_a_secure_channel() -> None:
    from pymilvus.client.grpc_handler import GrpcHandler

    cfg = MilvusSettings(uri="https://milvus:19530", tls_ca_file=CA, tls_server_name="m.internal")
    kwargs = cfg.client_kwargs()
    assert kwargs == {"secure": True, "server_name": "m.internal", "server_pem_path": str(CA)}
    # pymilvus builds its channel from them (no connection is made until a call).
    handler = GrpcHandler(uri=cfg.uri, **kwargs)
    try:
        assert handler._secure is True
        assert handler._server_pem_path == str(CA)
    finally:
        handler.close()


def test_milvus_mutual_tls_arguments() -> None:
    cfg = MilvusSettings(
        uri="https://milvus:19530",
        tls_ca_file=Path("/ca.crt"),
        tls_cert_file=Path("/tls.crt"),
        tls_key_file=Path("/tls.key"),
    )
    assert cfg.client_kwargs() == {
        "secure": True,
        "client_pem_path": "/tls.crt",
        "client_key_path": "/tls.key",
        "ca_pem_path": "/ca.crt",
    }
    assert MilvusSettings().client_kwargs() == {}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"uri": "http://milvus:19530", "tls_ca_file": "/ca.crt"}, "use https://"),
        ({"uri": "https://milvus:19530", "tls_cert_file": "/tls.crt"}, "mutual TLS needs"),
        (
            {"uri": "https://m:1", "tls_cert_file": "/c", "tls_key_file": "/k"},
            "MPP_MILVUS__TLS_CA_FILE",
        ),
    ],
)
def test_milvus_tls_settings_that_cannot_work_are_refused(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MilvusSettings.model_validate(fields)
