"""The chart's production defaults (issue #14): TLS to Kafka and every store unless an explicit
``insecure: true``, the ids HMAC key and the API keys in a Secret of their own, given only to
the pods that use them, and production refusing to render without them.

Everything is rendered by the pinned helm (offline) and read back through lib/mpp/config/:
what a pod's process would build its clients from, not the template's text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg.conninfo
import pytest

from mpp.config import SCOPES, Settings
from mpp.stack.deploy import local_values
from mpp.stack.services import SERVICES
from tests.deploy.conftest import (
    CI_VALUES,
    DEFAULTS,
    FULLNAME,
    Rendered,
    template,
    template_result,
)
from tests.deploy.manifests import (
    OPTIONS_EXISTING,
    all_containers,
    container,
    deployment,
    pod_environment,
    settings_from,
    workloads,
)

pytestmark = pytest.mark.timeout(1800)  # the first run builds helm (see conftest)

STORES = ("kafka", "neo4j", "postgres", "redis", "milvus")
DOORS = {"recommender", "analytics"}  # the services that check API keys
IDS_KEYS = {"MPP_IDS__HMAC_KEY", "MPP_IDS__PREVIOUS_HMAC_KEYS"}


def key_refs(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's env entries read from a Secret's key: variable -> secretKeyRef."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


# --- TLS or an explicit insecure -----------------------------------------------------------


def test_bare_defaults_are_tls_and_refuse_only_for_the_keys(helm: Path) -> None:
    """The defaults are TLS everywhere; what they lack is production's keys, named."""
    result = template_result(helm)
    assert result.returncode != 0
    assert "config.environment=production needs" in result.stderr
    assert "secrets.hmacKey" in result.stderr
    assert "secrets.apiKeys" in result.stderr
    assert "mpp keys new" in result.stderr
    assert "would not be encrypted" not in result.stderr


@pytest.mark.parametrize(
    ("assignment", "named"),
    [
        ("kafka.securityProtocol=PLAINTEXT", "kafka.securityProtocol=PLAINTEXT"),
        (
            "kafka.securityProtocol=SASL_PLAINTEXT,kafka.saslMechanism=PLAIN",
            "kafka.securityProtocol=SASL_PLAINTEXT",
        ),
        ("postgres.sslmode=prefer", "postgres.sslmode=prefer"),
        ("postgres.sslmode=disable", "postgres.sslmode=disable"),
        ("neo4j.uri=bolt://graph:7687", "neo4j.uri=bolt://graph:7687"),
        # Encrypted but unverified: anyone on the path could stand in for the server.
        ("neo4j.uri=neo4j+ssc://graph:7687", "neo4j.uri=neo4j+ssc://graph:7687"),
        ("redis.url=redis://cache:6379/0", "redis.url=redis://cache:6379/0"),
        ("milvus.uri=http://milvus:19530", "milvus.uri=http://milvus:19530"),
    ],
)
def test_a_plaintext_store_is_refused_unless_insecure(
    helm: Path, assignment: str, named: str
) -> None:
    refused = template_result(helm, DEFAULTS, set_values=(assignment,))
    assert refused.returncode != 0
    assert "insecure is false" in refused.stderr
    assert named in refused.stderr
    assert "set insecure: true only where the network is trusted" in refused.stderr
    allowed = template_result(helm, DEFAULTS, set_values=(assignment, "insecure=true"))
    assert allowed.returncode == 0, allowed.stderr


def test_every_plaintext_connection_is_named_at_once(helm: Path) -> None:
    refused = template_result(helm, "insecure-values.yaml", set_values=("insecure=false",))
    assert refused.returncode != 0
    for named in (
        "kafka.securityProtocol=PLAINTEXT",
        "postgres.sslmode=disable",
        "neo4j.uri=bolt://neo4j:7687",
        "redis.url=redis://redis:6379/0",
        "milvus.uri=http://milvus:19530",
    ):
        assert named in refused.stderr


def test_insecure_renders_plaintext_without_keys_in_development(
    insecure_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    data = insecure_render.configmap_data()
    assert data["MPP_KAFKA__SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert data["MPP_POSTGRES__SSLMODE"] == "disable"
    assert "MPP_POSTGRES__SSLROOTCERT" not in data
    assert insecure_render.keys_data() == {}
    for service in SERVICES:
        workload = deployment(insecure_render, service)
        names = {v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert not {f"{store}-tls" for store in STORES} & names
        settings = settings_from(
            pod_environment(insecure_render, workload, container(workload), {}), clean_environ
        )
        assert settings.environment == "development"
        assert not (settings.neo4j.tls or settings.redis.tls or settings.milvus.tls)


@pytest.mark.parametrize(
    ("assignments", "named"),
    [
        (("postgres.sslmode=verify-ca",), "postgres.sslmode=verify-ca needs the server's CA"),
        (
            ("kafka.securityProtocol=SASL_SSL",),
            "kafka.securityProtocol=SASL_SSL needs kafka.saslMechanism",
        ),
        (
            ("insecure=true", "postgres.sslmode=prefer", "postgres.tls.secretName=pg"),
            "postgres.tls.secretName is set but postgres.sslmode=prefer",
        ),
        (
            ("insecure=true", "neo4j.uri=bolt://g:7687", "neo4j.tls.secretName=ca"),
            "neo4j.tls.secretName is set but neo4j.uri=bolt://g:7687",
        ),
        (
            ("insecure=true", "redis.url=redis://c:6379/0", "redis.tls.secretName=ca"),
            "redis.tls.secretName is set but redis.url=redis://c:6379/0",
        ),
        (
            ("insecure=true", "milvus.uri=http://m:19530", "milvus.tls.serverName=m"),
            "milvus.tls is set but milvus.uri=http://m:19530",
        ),
        (
            ("insecure=true", "kafka.securityProtocol=PLAINTEXT", "kafka.tls.secretName=ca"),
            "kafka.tls.secretName is set but kafka.securityProtocol=PLAINTEXT",
        ),
    ],
)
def test_tls_settings_that_cannot_work_are_refused_even_when_insecure(
    helm: Path, assignments: tuple[str, ...], named: str
) -> None:
    result = template_result(helm, DEFAULTS, set_values=assignments)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


def test_verify_full_without_a_ca_secret_trusts_the_systems_cas(
    default_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    """libpq's default root certificate (~/.postgresql/root.crt) is not in a pod."""
    workload = deployment(default_render, "analytics")
    env = pod_environment(default_render, workload, container(workload), {})
    assert env["MPP_POSTGRES__SSLMODE"] == "verify-full"
    assert env["MPP_POSTGRES__SSLROOTCERT"] == "system"
    env["MPP_POSTGRES__PASSWORD"] = "pw"  # production's own check, not what is tested here
    env["MPP_NEO4J__PASSWORD"] = "pw"
    settings = settings_from(env, clean_environ)
    parsed = psycopg.conninfo.conninfo_to_dict(settings.postgres.conninfo())
    assert (parsed["sslmode"], parsed["sslrootcert"]) == ("verify-full", "system")
    assert settings.kafka.client_config()["security.protocol"] == "SSL"
    assert settings.neo4j.driver_args() == ("neo4j+s://neo4j:7687", {})
    assert settings.redis.tls and settings.milvus.client_kwargs() == {"secure": True}


def test_full_tls_mounts_every_stores_secret_in_every_pod(
    options_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    """options-values.yaml: a private CA for every store, client certificates where asked."""
    expected = {
        "kafka": "kafka-ca",
        "neo4j": "neo4j-ca",
        "postgres": "postgres-tls",
        "redis": "redis-tls",
        "milvus": "milvus-tls",
    }
    assert len(workloads(options_render)) == len(SERVICES)  # 5 Deployments and the Job
    for workload in workloads(options_render):
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for store, secret in expected.items():
            assert volumes[f"{store}-tls"]["secret"]["secretName"] == secret
        for c in all_containers(workload):
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            for store in expected:
                mount = mounts[f"{store}-tls"]
                assert mount["mountPath"] == f"/etc/mpp/{store}-tls"
                assert mount["readOnly"] is True
            env = pod_environment(options_render, workload, c, OPTIONS_EXISTING)
            env["MPP_KAFKA__SASL_PASSWORD"] = "kafka-pass"
            env["MPP_POSTGRES__PASSWORD"] = env["MPP_NEO4J__PASSWORD"] = "pw"
            env["MPP_IDS__HMAC_KEY"] = "a-key-of-sixteen-bytes"
            settings = settings_from(env, clean_environ)
            kafka = settings.kafka.client_config()
            assert kafka["security.protocol"] == "SASL_SSL"
            assert kafka["ssl.ca.location"] == "/etc/mpp/kafka-tls/ca.crt"
            parsed = psycopg.conninfo.conninfo_to_dict(settings.postgres.conninfo())
            assert parsed["sslmode"] == "verify-full"
            assert parsed["sslrootcert"] == "/etc/mpp/postgres-tls/ca.crt"
            assert parsed["sslcert"] == "/etc/mpp/postgres-tls/tls.crt"
            assert parsed["sslkey"] == "/etc/mpp/postgres-tls/tls.key"
            uri, tls = settings.neo4j.driver_args()
            assert uri == "neo4j://graph.example.com:7687"
            assert tls["encrypted"] is True
            redis = settings.redis.client_kwargs()
            assert redis["ssl_cert_reqs"] == "required"
            assert redis["ssl_ca_certs"] == "/etc/mpp/redis-tls/ca.crt"
            assert redis["ssl_certfile"] == "/etc/mpp/redis-tls/tls.crt"
            assert settings.milvus.client_kwargs() == {
                "secure": True,
                "server_name": "milvus.internal",
                "client_pem_path": "/etc/mpp/milvus-tls/tls.crt",
                "client_key_path": "/etc/mpp/milvus-tls/tls.key",
                "ca_pem_path": "/etc/mpp/milvus-tls/ca.crt",
            }
            assert settings.kafka.retention_ms == 43_200_000


# --- the keys: a Secret of their own, each pod only what it uses ---------------------------


def test_each_pod_reads_only_the_keys_it_uses(secrets_render: Rendered) -> None:
    keys_secret = f"{FULLNAME}-keys"
    assert set(secrets_render.keys_data()) == IDS_KEYS | {"MPP_AUTH__KEYS"}
    # The API keys and the ids key are not in the Secret every pod reads whole.
    assert not set(secrets_render.secret_data()) & (IDS_KEYS | {"MPP_AUTH__KEYS"})
    for service in SERVICES:
        c = container(deployment(secrets_render, service))
        refs = key_refs(c)
        wanted = IDS_KEYS | ({"MPP_AUTH__KEYS"} if service in DOORS else set())
        assert set(refs) == wanted, service
        for name, ref in refs.items():
            assert ref == {"name": keys_secret, "key": name, "optional": True}


def test_changed_keys_roll_the_pods(render: Callable[..., Rendered]) -> None:
    def checksum(rendered: Rendered) -> str:
        pod = deployment(rendered, "recommender")["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/keys"])

    before = checksum(render())
    after = checksum(render(set_values=("secrets.hmacKey=another-key-of-16-bytes",)))
    assert before != after


def test_the_migration_hook_gets_the_ids_keys_before_the_release_exists(
    secrets_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    """`mpp db migrate` loads the settings, which refuse production without the HMAC key;
    a first install's hook runs before the keys Secret exists, so it reads a hook copy."""
    job = secrets_render.get("Job", f"{FULLNAME}-migrations")
    copy_name = f"{FULLNAME}-migrations-keys"
    copy = secrets_render.get("Secret", copy_name)
    job_weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert int(copy["metadata"]["annotations"]["helm.sh/hook-weight"]) < job_weight
    assert set(secrets_render.secret_data(copy_name)) == IDS_KEYS  # no API keys
    for c in all_containers(job):
        assert {ref["name"] for ref in key_refs(c).values()} == {copy_name}
        settings = settings_from(pod_environment(secrets_render, job, c, {}), clean_environ)
        assert settings.ids.hmac_key.get_secret_value() == "ids-hmac-key: 32 bytes, not 'real'"
        assert settings.auth.keys == []


# --- production refuses without the keys ---------------------------------------------------


@pytest.mark.parametrize(
    ("assignments", "named"),
    [
        (("secrets.hmacKey=",), "secrets.hmacKey: the ids HMAC key"),
        (("secrets.apiKeys=null",), "secrets.apiKeys: at least one API key"),
        (("auth.enabled=false",), "auth.enabled: true"),
        (
            ("batch.enabled=true", "secrets.hmacKey=", "secrets.existingKeysSecret=mine"),
            "secrets.hmacKey for the batch Secret",
        ),
    ],
)
def test_production_refuses_without_a_key(
    helm: Path, assignments: tuple[str, ...], named: str
) -> None:
    result = template_result(helm, DEFAULTS, set_values=assignments)
    assert result.returncode != 0
    assert "config.environment=production needs" in result.stderr
    assert named in result.stderr, result.stderr
    # Not production: the services' development defaults apply.
    dev = template_result(
        helm, DEFAULTS, set_values=(*assignments, "config.environment=development")
    )
    assert dev.returncode == 0, dev.stderr


def test_an_existing_keys_secret_stands_for_the_keys(helm: Path) -> None:
    rendered = template(
        helm, set_values=("secrets.existingKeysSecret=mpp-keys", "batch.enabled=false")
    )
    assert rendered.find("Secret", f"{FULLNAME}-keys") is None
    refs = key_refs(container(deployment(rendered, "recommender")))
    assert {ref["name"] for ref in refs.values()} == {"mpp-keys"}


@pytest.mark.parametrize(
    ("values", "named"),
    [
        # A key itself instead of its digest: the chart keeps digests only.
        ({"apiKeys": [{"name": "k", "key": "plain", "scopes": ["admin"]}]}, "'key' not allowed"),
        ({"apiKeys": [{"name": "k", "sha256": "abc", "scopes": ["admin"]}]}, "/0/sha256"),
        ({"apiKeys": [{"name": "k", "sha256": "a" * 64, "scopes": ["root"]}]}, "/0/scopes/0"),
        ({"hmacKey": "short"}, "/secrets/hmacKey"),
    ],
)
def test_schema_refuses_a_malformed_key(
    helm: Path, tmp_path: Path, values: dict[str, Any], named: str
) -> None:
    path = tmp_path / "values.json"
    path.write_text(json.dumps({"secrets": values}))
    result = template_result(helm, DEFAULTS, str(path))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr


def test_schema_scopes_are_the_platforms() -> None:
    schema = json.loads((CI_VALUES.parent / "values.schema.json").read_text())
    item = schema["properties"]["secrets"]["properties"]["apiKeys"]["items"]
    assert set(item["properties"]["scopes"]["items"]["enum"]) == set(SCOPES)


# --- the local cluster's values --------------------------------------------------------------


def test_local_cluster_values_say_insecure_and_carry_the_local_key(
    helm: Path, tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    """`mpp deploy up`'s values (lib/mpp/stack/deploy.py) render: plaintext stores, allowed
    explicitly; the local admin key reaches the doors as its SHA-256 only."""
    values = local_values(Settings(_env_file=None), "t1", "the-local-key", "10.244.0.1", 19094)  # type: ignore[call-arg]
    assert values["insecure"] is True
    path = tmp_path / "local.json"
    path.write_text(json.dumps(values))
    rendered = template(helm, str(path))
    recommender = deployment(rendered, "recommender")
    env = pod_environment(rendered, recommender, container(recommender), {})
    settings = settings_from(env, clean_environ)
    assert [(k.name, k.sha256) for k in settings.auth.keys] == [
        ("local", hashlib.sha256(b"the-local-key").hexdigest())
    ]
    assert "the-local-key" not in json.dumps(rendered.docs)
    # The pods speak the local servers' plaintext protocols (the chart's defaults are TLS: a
    # value left out made every client time out against the local broker).
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.neo4j.uri.startswith("bolt://")
    assert settings.redis.url.startswith("redis://")
    assert settings.milvus.uri.startswith("http://")
    assert "sslmode=disable" in settings.postgres.conninfo()
    values["insecure"] = False
    path.write_text(json.dumps(values))
    refused = template_result(helm, str(path))
    assert refused.returncode != 0
    assert "insecure is false" in refused.stderr
