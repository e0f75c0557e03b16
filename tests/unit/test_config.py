import pytest
from pydantic import SecretStr, ValidationError

from mpp.config import PostgresSettings, Settings, host_port, is_loopback


def test_nested_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPP_KAFKA__BOOTSTRAP_SERVERS", "kafka-0.prod:9093,kafka-1.prod:9093")
    monkeypatch.setenv("MPP_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MPP_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("MPP_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("MPP_KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("MPP_POSTGRES__PORT", "6432")
    settings = Settings()
    conf = settings.kafka.client_config()
    assert conf["bootstrap.servers"] == "kafka-0.prod:9093,kafka-1.prod:9093"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "s3cret"
    assert settings.postgres.port == 6432
    # Secrets never show in a repr (and so never in a log line).
    assert "s3cret" not in repr(settings)


def test_sasl_without_credentials_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPP_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MPP_KAFKA__SASL_MECHANISM", "PLAIN")
    with pytest.raises(ValidationError, match="MPP_KAFKA__SASL_USERNAME"):
        Settings()


def test_production_refuses_missing_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPP_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="MPP_NEO4J__PASSWORD"):
        Settings()
    monkeypatch.setenv("MPP_NEO4J__PASSWORD", "x" * 12)
    monkeypatch.setenv("MPP_POSTGRES__PASSWORD", "y" * 12)
    with pytest.raises(ValidationError, match="MPP_IDS__HMAC_KEY"):
        Settings()
    monkeypatch.setenv("MPP_IDS__HMAC_KEY", "z" * 32)
    assert Settings().neo4j.auth() == ("neo4j", "x" * 12)


def test_postgres_conninfo_quotes_and_omits_unset_password() -> None:
    assert "password" not in PostgresSettings().conninfo()
    pg = PostgresSettings(password=SecretStr("it's a secret"))
    assert "password='it\\'s a secret'" in pg.conninfo()


def test_grpc_tls_needs_both_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPP_GRPC__TLS_CERT_FILE", "/etc/tls/tls.crt")
    with pytest.raises(ValidationError, match="TLS_KEY_FILE"):
        Settings()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:19092", ("127.0.0.1", 19092)),
        ("bolt://db.internal:7687", ("db.internal", 7687)),
        ("redis://127.0.0.1/0", ("127.0.0.1", 6379)),
        ("localhost", ("localhost", 6379)),
    ],
)
def test_host_port(address: str, expected: tuple[str, int]) -> None:
    assert host_port(address, 6379) == expected


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.3.4.5")
    assert is_loopback("localhost")
    assert is_loopback("[::1]")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.0.0.5")
    assert not is_loopback("kafka.prod")
