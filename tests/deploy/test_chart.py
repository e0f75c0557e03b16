"""The Helm chart (helm/mpp), linted and rendered offline with the pinned helm.

The rendered objects are checked against the code they deploy: the ports and modules of
lib/mpp/stack/services.py, the settings of lib/mpp/config/, the CLI's commands, the image's
user. Nothing here is a copy of those numbers or names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mpp.config import AnalyticsSettings, GrpcSettings, Settings
from mpp.stack.services import SERVICES, ServiceProcess
from tests.deploy.conftest import CHART, CI_VALUES, DEFAULTS, FULLNAME, Rendered, run_helm
from tests.deploy.settings_names import is_path_setting, literal_values, setting_field

pytestmark = pytest.mark.timeout(1800)  # the first run builds helm (see conftest)

VALUE_SETS = [(), ("options-values.yaml",), ("secrets-values.yaml",), ("insecure-values.yaml",)]
# The Secrets options-values.yaml names, made outside the chart (empty: the keys are absent).
OPTIONS_EXISTING: dict[str, dict[str, str]] = {"mpp-credentials": {}, "mpp-keys": {}}
# `helm template` of the chart with the defaults that render (keys-values.yaml).
TEMPLATE = ("template", "r", str(CHART), "-f", str(CI_VALUES / DEFAULTS))


def deployment(rendered: Rendered, service: str) -> dict[str, Any]:
    return rendered.get("Deployment", f"{FULLNAME}-{service}")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, [c["name"] for c in containers]
    return dict(containers[0])


def all_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(rendered: Rendered) -> list[dict[str, Any]]:
    return rendered.of_kind("Deployment") + rendered.of_kind("Job")


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def port_number(c: dict[str, Any], port: int | str) -> int:
    """A probe's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in c.get("ports", []) if p["name"] == port]
    assert named, f"container {c['name']} has no port named {port!r}"
    return int(named[0])


def pod_environment(
    rendered: Rendered,
    workload: dict[str, Any],
    c: dict[str, Any],
    existing: dict[str, dict[str, str]],
) -> dict[str, str]:
    """What the container's process sees: envFrom (ConfigMap, then Secret), then env, whose
    secretKeyRef entries read the rendered Secrets or ``existing`` (name -> data: Secrets
    made outside the chart); an optional key that is absent sets nothing."""

    def secret(name: str) -> dict[str, str]:
        if rendered.find("Secret", name) is not None:
            return rendered.secret_data(name)
        assert name in existing, f"{name} is neither rendered nor given"
        return existing[name]

    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(rendered.configmap_data(source["configMapRef"]["name"]))
        elif "secretRef" in source:
            env.update(secret(source["secretRef"]["name"]))
    env.update(env_of(c))
    for entry in c.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            continue
        data = secret(ref["name"])
        if ref["key"] in data:
            env[entry["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{ref} is missing and not optional"
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


# --- lint and schema ---------------------------------------------------------------------


@pytest.mark.parametrize("files", VALUE_SETS, ids=lambda f: f[0] if f else "defaults")
def test_lint_is_clean_in_strict_mode(helm: Path, files: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for name in (DEFAULTS, *files):
        args += ["-f", str(CI_VALUES / name)]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_schema_rejects_a_wrong_value_at_render_time(helm: Path) -> None:
    result = run_helm(helm, *TEMPLATE, "--set", "kafka.securityProtocol=PLAINTEXTT")
    assert result.returncode != 0
    assert "securityProtocol" in result.stderr

    misspelt = run_helm(helm, *TEMPLATE, "--set", "services.ingest.replica=3")
    assert misspelt.returncode != 0
    assert "replica" in misspelt.stderr


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ("services:\n  ingest:\n    replicas: two\n", "replicas"),
        ("storeEndpoints:\n  enabled: true\n  adresses: [10.0.0.1]\n  ports: {}\n", "adresses"),
        ("networkPolicy:\n  stores:\n    kafka: {peers: [], ports: [0]}\n", "ports"),
        ("services:\n  embedder:\n    image: {digest: latest}\n", "digest"),
    ],
)
def test_a_values_file_with_a_wrong_type_or_key_fails_naming_it(
    helm: Path, tmp_path: Path, values: str, named: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    result = run_helm(helm, *TEMPLATE, "-f", str(path))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("schema_path", "setting"),
    [
        (("config", "environment"), ("environment",)),
        (("config", "logLevel"), ("log_level",)),
        (("config", "logFormat"), ("log_format",)),
        (("kafka", "securityProtocol"), ("kafka", "security_protocol")),
        (("kafka", "saslMechanism"), ("kafka", "sasl_mechanism")),
        (("postgres", "sslmode"), ("postgres", "sslmode")),
        (("milvus", "indexType"), ("milvus", "index_type")),
        (("warehouse", "backend"), ("warehouse", "backend")),
    ],
)
def test_schema_choices_are_the_settings_choices(
    schema_path: tuple[str, ...], setting: tuple[str, ...]
) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    node = schema
    for key in schema_path:
        node = node["properties"][key]
    allowed = {v for v in node["enum"] if v != ""}  # "" stands for "not set"
    assert allowed == literal_values(*setting)


def test_values_list_exactly_the_platforms_services(chart_values: dict[str, Any]) -> None:
    assert set(chart_values["services"]) == set(SERVICES)
    for name, (_module, port) in SERVICES.items():
        assert chart_values["services"][name]["ports"]["http"] == port, name


# --- Deployments ---------------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_runs_its_module_with_probes_on_its_port(
    default_render: Rendered, service: str
) -> None:
    module, port = SERVICES[service]
    c = container(deployment(default_render, service))
    assert c["command"] == ["python", "-m", module]
    env = env_of(c)
    # The process listens where the probes look.
    assert env["MPP_HTTP__PORT"] == str(port)
    assert env["MPP_HTTP__HOST"] in {"0.0.0.0", "::"}
    assert port_number(c, "http") == port
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(c, get["port"]) == port, probe


def test_recommender_and_analytics_expose_their_other_ports(default_render: Rendered) -> None:
    grpc_port = GrpcSettings().port
    reports_port = AnalyticsSettings().report_port
    recommender = container(deployment(default_render, "recommender"))
    assert env_of(recommender)["MPP_GRPC__PORT"] == str(grpc_port)
    assert port_number(recommender, "grpc") == grpc_port
    analytics = container(deployment(default_render, "analytics"))
    assert env_of(analytics)["MPP_ANALYTICS__REPORT_PORT"] == str(reports_port)
    assert port_number(analytics, "reports") == reports_port

    service = default_render.get("Service", f"{FULLNAME}-recommender")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["http"]["port"] == SERVICES["recommender"][1]
    assert ports["grpc"]["port"] == grpc_port
    assert ports["grpc"]["appProtocol"] == "grpc"
    reports = default_render.get("Service", f"{FULLNAME}-analytics")
    assert {p["name"]: p["port"] for p in reports["spec"]["ports"]}["reports"] == reports_port


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_services_and_budgets_select_the_deployments_pods(
    default_render: Rendered, service: str
) -> None:
    pod = deployment(default_render, service)["spec"]["template"]
    labels = pod["metadata"]["labels"]
    svc = default_render.get("Service", f"{FULLNAME}-{service}")
    assert svc["spec"]["selector"].items() <= labels.items()
    container_ports = {p["name"] for p in container({"spec": {"template": pod}})["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports
    pdb = default_render.get("PodDisruptionBudget", f"{FULLNAME}-{service}")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # Other services' pods are not selected.
    for other in SERVICES:
        if other != service:
            other_labels = deployment(default_render, other)["spec"]["template"]["metadata"]
            assert not svc["spec"]["selector"].items() <= other_labels["labels"].items()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_scrape_annotations_point_at_the_metrics_port(
    default_render: Rendered, service: str
) -> None:
    annotations = deployment(default_render, service)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(SERVICES[service][1])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_workers_get_the_local_stop_allowance_to_finish_a_batch(default_render: Rendered) -> None:
    """SIGTERM finishes the batch in hand; `mpp services down` waits ServiceProcess.stop_timeout_s
    for that, and Kubernetes must not kill sooner."""
    for service in SERVICES:
        spec = deployment(default_render, service)["spec"]["template"]["spec"]
        grace = spec["terminationGracePeriodSeconds"]
        if service == "recommender":
            # preStop sleep, then 5 s for in-flight requests and the follower's join.
            pre_stop = container(deployment(default_render, service))["lifecycle"]["preStop"]
            sleep = int(pre_stop["exec"]["command"][1])
            assert grace >= sleep + 15
        else:
            assert grace >= ServiceProcess.stop_timeout_s, service


def test_pods_run_as_the_images_user_on_a_read_only_root(
    default_render: Rendered, dockerfile_user: int
) -> None:
    data_dir = default_render.configmap_data()["MPP_STACK__DIR"]
    for workload in workloads(default_render):
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == dockerfile_user
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(workload):
            security = c["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            # What must stay writable is an emptyDir.
            for path in ("/tmp", data_dir):
                assert "emptyDir" in volumes[mounts[path]], (workload["metadata"]["name"], path)
            assert c["resources"]["requests"], c["name"]


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("files", VALUE_SETS, ids=lambda f: f[0] if f else "defaults")
def test_every_variable_the_chart_sets_is_a_setting(
    render: Callable[..., Rendered], files: tuple[str, ...]
) -> None:
    rendered = render(*files)
    names: set[str] = set()
    for cm in rendered.of_kind("ConfigMap"):
        keys = set(cm.get("data") or {})
        assert all(k.startswith("MPP_") for k in keys), keys
        names |= keys
    for secret in rendered.of_kind("Secret"):
        names |= set(secret.get("data") or {})
    for workload in workloads(rendered):
        for c in all_containers(workload):
            names |= {n for n in env_of(c) if n.startswith("MPP_")}
    assert len(names) > 30  # the ConfigMap was rendered at all
    unknown = sorted(n for n in names if setting_field(n) is None)
    assert not unknown, f"not settings of mpp.config.Settings: {unknown}"


def test_the_services_start_with_exactly_what_is_rendered(
    secrets_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    """Settings built from each container's rendered environment: production's own checks
    pass, and the values arrive intact (quoting, JSON lists, numbers)."""
    for service, (_module, port) in SERVICES.items():
        workload = deployment(secrets_render, service)
        env = pod_environment(secrets_render, workload, container(workload), {})
        settings = settings_from(env, clean_environ)
        assert settings.environment == "production"
        assert settings.http.port == port
        assert settings.postgres.password is not None
        assert settings.postgres.password.get_secret_value() == "pg'pass"
        assert settings.neo4j.auth() == ("neo4j", "n3o-pass word")
        assert settings.ids.hmac_key.get_secret_value() == "ids-hmac-key: 32 bytes, not 'real'"
        assert [k.get_secret_value() for k in settings.ids.previous_hmac_keys] == [
            "the ids key before the rotation"
        ]
        if service in ("recommender", "analytics"):
            assert [(k.name, k.scopes, k.rate_per_s) for k in settings.auth.keys] == [
                ("reader", ["recommendations:read", "feedback:write"], 50.0),
                ("ops", ["admin"], 100.0),
            ]
        else:  # the API keys go only to the doors that check them
            assert "MPP_AUTH__KEYS" not in env, service
        assert settings.kafka.topics.partitions == 12
        assert settings.kafka.retention_ms == 86_400_000
        assert settings.stack.dir == Path("/var/lib/mpp")


def test_defaults_without_credentials_fail_the_way_notes_warn(
    default_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    workload = deployment(default_render, "ingest")
    env = pod_environment(default_render, workload, container(workload), {})
    with pytest.raises(ValueError, match="MPP_POSTGRES__PASSWORD"):
        settings_from(env, clean_environ)


# --- options: existing Secret, HPA, a disabled service, ServiceMonitor, mounted files -------


def test_an_existing_secret_replaces_the_charts_own(options_render: Rendered) -> None:
    assert options_render.of_kind("Secret") == []
    refs = set()
    key_refs = set()
    for workload in workloads(options_render):
        for c in all_containers(workload):
            refs |= {s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s}
            key_refs |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
        annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
        assert "checksum/secret" not in annotations
        assert "checksum/keys" not in annotations
    assert refs == {"mpp-credentials"}
    assert key_refs == {"mpp-keys"}


def test_existing_secret_keys_are_the_ones_the_chart_would_write(
    options_render: Rendered, secrets_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    """An existing Secret with the keys the chart itself writes satisfies every service."""
    credentials = {key: "s3cret" for key in secrets_render.secret_data()} | {
        "MPP_KAFKA__SASL_PASSWORD": "kafka-pass"
    }
    keys = secrets_render.keys_data()
    assert set(keys) == {"MPP_IDS__HMAC_KEY", "MPP_IDS__PREVIOUS_HMAC_KEYS", "MPP_AUTH__KEYS"}
    existing = {"mpp-credentials": credentials, "mpp-keys": keys}
    enabled = [s for s in SERVICES if s != "graph-writer"]
    for service in enabled:
        workload = deployment(options_render, service)
        settings = settings_from(
            pod_environment(options_render, workload, container(workload), existing),
            clean_environ,
        )
        assert settings.ids.hmac_key.get_secret_value() == keys["MPP_IDS__HMAC_KEY"]
        assert bool(settings.auth.keys) == (service in ("recommender", "analytics"))
        assert settings.kafka.client_config()["sasl.mechanism"] == "SCRAM-SHA-512"
        assert settings.kafka.client_config()["sasl.password"] == "kafka-pass"
        assert settings.embedder.project_to_dim == 1024
        assert settings.ingest.redact_pii is False
        assert settings.warehouse.backend == "bigquery"


def test_files_named_by_settings_are_mounted(options_render: Rendered) -> None:
    """Every file a Path setting names lies in a volume mounted from the right Secret."""
    expected_secret = {
        "MPP_KAFKA__SSL_CA_LOCATION": "kafka-ca",
        "MPP_NEO4J__CA_FILE": "neo4j-ca",
        "MPP_POSTGRES__SSLROOTCERT": "postgres-tls",
        "MPP_POSTGRES__SSLCERT": "postgres-tls",
        "MPP_POSTGRES__SSLKEY": "postgres-tls",
        "MPP_REDIS__SSL_CA_FILE": "redis-tls",
        "MPP_REDIS__SSL_CERT_FILE": "redis-tls",
        "MPP_REDIS__SSL_KEY_FILE": "redis-tls",
        "MPP_MILVUS__TLS_CA_FILE": "milvus-tls",
        "MPP_MILVUS__TLS_CERT_FILE": "milvus-tls",
        "MPP_MILVUS__TLS_KEY_FILE": "milvus-tls",
        "MPP_WAREHOUSE__BIGQUERY_CREDENTIALS_FILE": "bigquery-key",
        "MPP_GRPC__TLS_CERT_FILE": "recommender-grpc-tls",
        "MPP_GRPC__TLS_KEY_FILE": "recommender-grpc-tls",
    }
    seen = set()
    for workload in workloads(options_render):
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(workload):
            env = pod_environment(options_render, workload, c, OPTIONS_EXISTING)
            for name, path in env.items():
                # sslrootcert is a file or "system" (libpq: the system's CAs).
                is_file = is_path_setting(name) or (
                    name == "MPP_POSTGRES__SSLROOTCERT" and path != "system"
                )
                if not is_file or name == "MPP_STACK__DIR":
                    continue
                mounts = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
                assert mounts, f"{workload['metadata']['name']}: {name}={path} is not mounted"
                volume = volumes[mounts[0]["name"]]
                assert volume["secret"]["secretName"] == expected_secret[name]
                seen.add(name)
    assert seen == set(expected_secret)


def test_a_disabled_service_renders_nothing(options_render: Rendered) -> None:
    for doc in options_render.docs:
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/component") != "graph-writer", doc["kind"]
        assert "graph-writer" not in doc["metadata"]["name"]
    enabled = {d["metadata"]["name"] for d in options_render.of_kind("Deployment")}
    assert enabled == {f"{FULLNAME}-{s}" for s in SERVICES if s != "graph-writer"}


def test_the_recommender_autoscales_when_asked(
    options_render: Rendered, default_render: Rendered
) -> None:
    assert default_render.of_kind("HorizontalPodAutoscaler") == []
    hpa = options_render.get("HorizontalPodAutoscaler", f"{FULLNAME}-recommender")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{FULLNAME}-recommender",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    # The HPA owns the replica count: the Deployment must not fight it on every upgrade.
    assert "replicas" not in deployment(options_render, "recommender")["spec"]
    assert deployment(options_render, "embedder")["spec"]["replicas"] == 3


def test_service_monitor_scrapes_every_service(options_render: Rendered) -> None:
    monitor = options_render.get("ServiceMonitor", FULLNAME)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    services = options_render.of_kind("Service")
    assert len(services) == len(SERVICES) - 1
    for svc in services:
        assert selector.items() <= svc["metadata"]["labels"].items()
        assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}


def test_no_service_monitor_without_its_crd(render: Callable[..., Rendered]) -> None:
    """A cluster without the Prometheus Operator would refuse the object ("no matches for
    kind"); the pods keep their prometheus.io annotations instead."""
    rendered = render("options-values.yaml")
    assert rendered.of_kind("ServiceMonitor") == []
    assert rendered.of_kind("Deployment")


def test_worker_replicas_beyond_the_partitions_are_refused(helm: Path) -> None:
    too_many = run_helm(helm, *TEMPLATE, "--set", "services.ingest.replicas=13")
    assert too_many.returncode != 0
    assert "services.ingest.replicas=13 exceeds kafka.topics.partitions=12" in too_many.stderr
    hpa = run_helm(
        helm,
        *TEMPLATE,
        "--set",
        "services.recommender.autoscaling.enabled=true",
        "--set",
        "services.recommender.autoscaling.maxReplicas=20",
    )
    # The recommender's API scales past the partitions (its follower only shares them out).
    assert hpa.returncode == 0, hpa.stderr
    assert "maxReplicas: 20" in hpa.stdout
    raised = run_helm(
        helm,
        *TEMPLATE,
        "--set",
        "services.ingest.replicas=13",
        "--set",
        "kafka.topics.partitions=16",
    )
    assert raised.returncode == 0, raised.stderr


# --- the migration hook --------------------------------------------------------------------


def cli_command_exists(words: list[str]) -> bool:
    """Whether `mpp <words>` is a command (not a group) of lib/mpp/cli.py."""
    import typer

    from mpp.cli import app

    # Groups are recognised by their subcommands (typer's Group need not be this click's).
    command: Any = typer.main.get_command(app)
    for word in words:
        subcommands = getattr(command, "commands", None)
        if subcommands is None or word not in subcommands:
            return False
        command = subcommands[word]
    return getattr(command, "commands", None) is None and callable(command.callback)


def hook_job(rendered: Rendered) -> dict[str, Any]:
    return rendered.get("Job", f"{FULLNAME}-migrations")


@pytest.mark.parametrize("files", VALUE_SETS, ids=lambda f: f[0] if f else "defaults")
def test_migrations_run_before_install_and_upgrade(
    render: Callable[..., Rendered], files: tuple[str, ...]
) -> None:
    rendered = render(*files)
    job = hook_job(rendered)
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    steps = all_containers(job)
    assert [c["command"] for c in steps] == [["mpp", "db", "migrate"], ["mpp", "topics", "ensure"]]
    for c in steps:
        assert c["command"][0] == "mpp"
        assert cli_command_exists(c["command"][1:]), c["command"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Whatever the Job reads exists before it: hooks with a lower weight, or an existing Secret.
    weight = int(annotations["helm.sh/hook-weight"])
    for c in steps:
        for source in c["envFrom"]:
            kind, ref = next(iter(source.items()))
            name = ref["name"]
            if kind == "secretRef" and rendered.find("Secret", name) is None:
                assert name == "mpp-credentials"
                continue
            obj = rendered.get("ConfigMap" if kind == "configMapRef" else "Secret", name)
            obj_annotations = obj["metadata"]["annotations"]
            assert "pre-install" in obj_annotations["helm.sh/hook"]
            assert int(obj_annotations["helm.sh/hook-weight"]) < weight
    # Nor may it need anything else the release creates as an ordinary object.
    ordinary = {
        (d["kind"], d["metadata"]["name"])
        for d in rendered.docs
        if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})
    }
    account = job["spec"]["template"]["spec"].get("serviceAccountName")
    assert ("ServiceAccount", account) not in ordinary
    # The hook's copy of the settings is the services' own.
    assert rendered.configmap_data(f"{FULLNAME}-migrations") == rendered.configmap_data()


def test_topics_step_can_be_left_out(render: Callable[..., Rendered]) -> None:
    rendered = render(set_values=("migrations.ensureTopics=false",))
    steps = all_containers(hook_job(rendered))
    assert [c["command"] for c in steps] == [["mpp", "db", "migrate"]]
    off = render(set_values=("migrations.enabled=false",))
    assert off.of_kind("Job") == []
    assert off.find("ConfigMap", f"{FULLNAME}-migrations") is None


def test_config_changes_roll_the_pods(render: Callable[..., Rendered]) -> None:
    def checksum(rendered: Rendered) -> str:
        pod = deployment(rendered, "ingest")["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/config"])

    before = checksum(render())
    after = checksum(render(set_values=("kafka.bootstrapServers=other:9092",)))
    assert before != after


def test_no_template_reads_a_value_that_values_yaml_lacks(
    chart_values: dict[str, Any],
) -> None:
    """`.Values.a.b` paths in the templates exist in values.yaml (a typo renders as empty)."""
    import re

    known: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{prefix}.{key}" if prefix else key
                known.add(path)
                walk(value, path)

    walk(chart_values, "")
    used = set()
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            used |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert used, "no .Values reference found"
    missing = sorted(u.rstrip(".") for u in used if u.rstrip(".") not in known)
    assert not missing, missing


def test_extra_env_overrides_a_setting_without_a_duplicate_key(helm: Path) -> None:
    """PyYAML keeps the last of two equal keys; the API server refuses them: count the text."""
    result = run_helm(
        helm,
        *TEMPLATE,
        "--show-only",
        "templates/configmap.yaml",
        "--set",
        "config.extraEnv.MPP_LOG_LEVEL=DEBUG",
    )
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert [line for line in lines if line.startswith("MPP_LOG_LEVEL:")] == [
        'MPP_LOG_LEVEL: "DEBUG"'
    ]


def test_what_the_image_writes_lands_on_writable_volumes(default_render: Rendered) -> None:
    """The image points HOME, caches and MPP_STACK__DIR at folders the chart mounts writable."""
    from tests.deploy.dockerfile import env_of_stage, instructions

    found = instructions()
    image_env = env_of_stage(found, max(i.stage for i in found))
    writable = ["HOME", "HF_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "MPP_STACK__DIR"]
    assert set(writable) <= set(image_env)
    assert image_env["MPP_STACK__DIR"] == default_render.configmap_data()["MPP_STACK__DIR"]
    for workload in workloads(default_render):
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        for c in all_containers(workload):
            for name in writable:
                path = image_env[name]
                mounts = [
                    m
                    for m in c["volumeMounts"]
                    if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")
                ]
                assert mounts, f"{c['name']}: {name}={path} is on the read-only root"
                assert "emptyDir" in volumes[mounts[0]["name"]]
                assert not mounts[0].get("readOnly", False)
