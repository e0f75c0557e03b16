"""TLS handshakes with real servers, through the settings the chart renders and the clients
the services build (issue #14's production defaults).

The local stack's servers speak plaintext, so this module starts its own: a Redis and a
PostgreSQL with TLS on, each on a free loopback port, with certificates made here by openssl
(a CA, a server certificate for "localhost" only, a client certificate, and a second CA that
signed nothing of theirs). Each test asks what a pod would see: the right CA connects, another
CA, another host name, a plaintext client and a missing client certificate are refused.
Neo4j, Milvus and Kafka over TLS are not started here (a JVM each, and Milvus Lite has no TLS):
their settings are checked against the client libraries in tests/unit/test_store_tls.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis

from mpp.config import PostgresSettings, RedisSettings, Settings
from mpp.pipeline import free_port
from mpp.stores import postgres_connect, redis_client

pytestmark = pytest.mark.timeout(120)

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


def _make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return key, cert


def _make_leaf(
    folder: Path, name: str, ca: tuple[Path, Path], extensions: str
) -> tuple[Path, Path]:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    ext = folder / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    if OPENSSL is None:
        pytest.skip("openssl is not installed (apt-get install openssl): no certificates")
    # Readable by the postgres user too (pytest's own tmp folders are root's only).
    folder = Path(tempfile.mkdtemp(prefix="mpp-tls-"))
    folder.chmod(0o755)
    try:
        ca = _make_ca(folder, "mpp-test-ca")
        other = _make_ca(folder, "another-ca")
        server = _make_leaf(
            folder,
            "localhost",
            ca,
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        # libpq's clientcert=verify-ca checks the chain only; the name is the role's for
        # clientcert=verify-full, which is not used here.
        client = _make_leaf(folder, "mpp", ca, "extendedKeyUsage=clientAuth\n")
        for path in folder.iterdir():
            path.chmod(0o644)
        client[0].chmod(0o600)  # libpq refuses a private key others can read
        yield Pki(folder, ca[1], other[1], server[1], server[0], client[1], client[0])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after 30 s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# --- Redis ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(pki: Pki) -> Iterator[int]:
    """redis-server with TLS only (no plaintext port), client certificates required."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    log = pki.dir / "redis.log"
    # fmt: off
    argv = [
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "yes",
        "--save", "", "--appendonly", "no", "--dir", str(pki.dir), "--logfile", str(log),
    ]
    # fmt: on
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        yield port
    finally:
        _stop(process)


def redis_settings(url: str, pki: Pki, ca: Path | None = None, client: bool = True) -> Settings:
    cfg = RedisSettings(
        url=url,
        ssl_ca_file=ca or pki.ca,
        ssl_cert_file=pki.client_cert if client else None,
        ssl_key_file=pki.client_key if client else None,
        socket_timeout_s=5,
    )
    return Settings(_env_file=None, redis=cfg)  # type: ignore[call-arg]


def test_redis_over_tls_with_the_ca_and_a_client_certificate(tls_redis: int, pki: Pki) -> None:
    client = redis_client(redis_settings(f"rediss://localhost:{tls_redis}/0", pki))
    try:
        assert client.ping() is True
        client.set("mpp:tls", "yes")
        assert client.get("mpp:tls") == b"yes"
    finally:
        client.close()


def test_the_recommenders_async_pool_speaks_tls_too(tls_redis: int, pki: Pki) -> None:
    from mpp_recommender.cache import RedisCache

    cache = RedisCache(redis_settings(f"rediss://localhost:{tls_redis}/0", pki))

    async def ping() -> bool:
        try:
            return bool(await cache._async.ping())
        finally:
            await cache._async.aclose()

    assert asyncio.run(ping()) is True


@pytest.mark.parametrize(
    ("case", "url", "use_other_ca", "client_cert"),
    [
        ("another CA", "rediss://localhost:{port}/0", True, True),
        ("another host name", "rediss://127.0.0.1:{port}/0", False, True),
        ("no client certificate", "rediss://localhost:{port}/0", False, False),
    ],
)
def test_redis_refuses_what_tls_must_refuse(
    tls_redis: int, pki: Pki, case: str, url: str, use_other_ca: bool, client_cert: bool
) -> None:
    settings = redis_settings(
        url.format(port=tls_redis),
        pki,
        ca=pki.other_ca if use_other_ca else None,
        client=client_cert,
    )
    client = redis_client(settings)
    try:
        with pytest.raises(redis.ConnectionError) as refused:
            client.ping()
        # TLS is what failed (not, say, a port nobody listens on): verification on our side,
        # or the server closing the session of a client without a certificate.
        assert "ssl" in str(refused.value).lower(), refused.value
    finally:
        client.close()


def test_plaintext_redis_gets_no_answer_from_a_tls_port(tls_redis: int) -> None:
    cfg = RedisSettings(url=f"redis://localhost:{tls_redis}/0", socket_timeout_s=2)
    client = redis_client(Settings(_env_file=None, redis=cfg))  # type: ignore[call-arg]
    try:
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            client.ping()
    finally:
        client.close()


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else shutil.which(name)


@pytest.fixture(scope="module")
def tls_postgres(pki: Pki) -> Iterator[int]:
    """A PostgreSQL that accepts only TLS connections from a client certificate of the CA."""
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    data, sockets = pki.dir / "pgdata", pki.dir / "pgsock"
    data.mkdir(mode=0o700)
    sockets.mkdir()
    key = pki.dir / "pg-server.key"
    shutil.copy(pki.server_key, key)
    if as_user:
        for path in (data, sockets, key):
            shutil.chown(path, "postgres", "postgres")
    key.chmod(0o600)
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "mpp", "--auth=trust", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # Plaintext refused outright; TLS accepted with a client certificate that the CA signed.
    (data / "pg_hba.conf").write_text(
        "hostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n"
        "hostssl all all ::1/128 trust clientcert=verify-ca\n"
        "hostnossl all all all reject\n"
    )
    port = free_port()
    log = pki.dir / "postgres.log"
    # fmt: off
    argv = [
        *as_user, postgres, "-D", str(data), "-p", str(port), "-k", str(sockets),
        "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on",
        "-c", f"ssl_cert_file={pki.server_cert}", "-c", f"ssl_key_file={key}",
        "-c", f"ssl_ca_file={pki.ca}", "-c", "fsync=off",
    ]
    # fmt: on
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        yield port
    finally:
        _stop(process)


def pg_settings(port: int, pki: Pki, **fields: object) -> Settings:
    base: dict[str, object] = {
        "host": "localhost",
        "port": port,
        "user": "mpp",
        "database": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": str(pki.ca),
        "sslcert": pki.client_cert,
        "sslkey": pki.client_key,
    }
    cfg = PostgresSettings.model_validate(base | fields)
    return Settings(_env_file=None, postgres=cfg)  # type: ignore[call-arg]


def test_postgres_verify_full_with_the_ca_and_a_client_certificate(
    tls_postgres: int, pki: Pki
) -> None:
    with postgres_connect(pg_settings(tls_postgres, pki)) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)


@pytest.mark.parametrize(
    ("case", "fields", "says"),
    [
        ("another CA", {"sslrootcert": "OTHER"}, "certificate verify failed"),
        ("another host name", {"host": "127.0.0.1"}, "does not match host name"),
        ("no client certificate", {"sslcert": None, "sslkey": None}, "valid client certificate"),
        ("plaintext", {"sslmode": "disable", "sslrootcert": None}, "no encryption"),
    ],
)
def test_postgres_refuses_what_tls_must_refuse(
    tls_postgres: int, pki: Pki, case: str, fields: dict[str, object], says: str
) -> None:
    if fields.get("sslrootcert") == "OTHER":
        fields = fields | {"sslrootcert": str(pki.other_ca)}
    with pytest.raises(psycopg.OperationalError, match=says):
        postgres_connect(pg_settings(tls_postgres, pki, **fields)).close()
