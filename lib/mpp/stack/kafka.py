"""Apache Kafka in KRaft mode (one combined broker and controller) from Maven Central's jars.

stack/kafka/install.sh resolves org.apache.kafka:kafka_2.13 and a log4j2 binding with Maven
into ~/.cache/mpp/kafka/<hash of the pom>; the broker runs on the installed JVM (17+). The
storage is formatted once; later starts reuse it. See stack/kafka/NOTES.md.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from mpp.config import Settings, host_port
from mpp.stack.base import Progress, Server, StackError, run_checked
from mpp.stack.cluster_config import HOST_GATEWAY, KAFKA_CLUSTER_PORT

HEAP = ["-Xms256m", "-Xmx512m"]
# The flags of Kafka's own kafka-run-class.sh, and fail fast rather than limp on OOM.
JVM_FLAGS = [
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise StackError(
            "java not found: install a JDK 17 or newer (apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME"
        )
    return found


def with_cluster_listener(properties: str, host: str) -> str:
    """Add the CLUSTER listener: bound on ``host``:19094, advertised to pods as 10.244.0.1.

    Pods of the local cluster (mpp cluster up) bootstrap from 10.244.0.1:19094, which the
    cluster's forwarder passes to this listener; the broker then names that same address in
    its metadata, which pods can reach (the PLAINTEXT listener advertises 127.0.0.1).
    """
    listener = f"CLUSTER://{host}:{KAFKA_CLUSTER_PORT}"
    advertised = f"CLUSTER://{HOST_GATEWAY}:{KAFKA_CLUSTER_PORT}"
    lines = []
    for line in properties.splitlines():
        key, _, value = line.partition("=")
        if key == "listeners" and "CLUSTER://" not in value:
            line = f"{line},{listener}"
        elif key == "advertised.listeners" and "CLUSTER://" not in value:
            line = f"{line},{advertised}"
        elif key == "listener.security.protocol.map" and "CLUSTER:" not in value:
            line = f"{line},CLUSTER:PLAINTEXT"
        lines.append(line)
    return "\n".join(lines) + "\n"


class KafkaServer(Server):
    name = "kafka"
    default_port = 19092

    def __init__(self, settings: Settings, stack_dir: Path, repo_root: Path) -> None:
        super().__init__(settings, stack_dir, repo_root)
        self.scripts = self.repo_root / "stack" / "kafka"
        self.stdout_file = self.home / "kafka.out"
        self.lib_dir: Path | None = None

    def address(self) -> tuple[str, int]:
        first = self.settings.kafka.bootstrap_servers.split(",")[0]
        return host_port(first, self.default_port)

    def probe(self) -> str | None:
        conf = {**self.settings.kafka.client_config(), "socket.timeout.ms": 2000}
        try:
            AdminClient(conf).list_topics(timeout=2.0)
        except KafkaException as exc:
            return str(exc)
        return None

    def install(self, progress: Progress) -> None:
        if shutil.which("mvn") is None:
            raise StackError("kafka: mvn not found; install Maven (apt-get install maven)")
        progress("kafka: resolving the broker's jars (Maven, cached after the first time)")
        env = dict(os.environ, MPP_CACHE=str(self.cache_dir))
        out = run_checked([str(self.scripts / "install.sh")], "kafka: install.sh", env=env)
        self.lib_dir = Path(out.strip().splitlines()[-1])

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    def prepare(self, progress: Progress) -> None:
        host, port = self.address()
        controller = self.settings.stack.kafka_controller_port
        log_dirs = self.data_dir / "kraft"
        template = (self.scripts / "server.properties.template").read_text()
        rendered = (
            template.replace("@PORT@", str(port))
            .replace("@CONTROLLER_PORT@", str(controller))
            .replace("@LOG_DIRS@", str(log_dirs.resolve()))
            .replace("127.0.0.1", host)
        )
        self.properties.write_text(with_cluster_listener(rendered, host))
        if (log_dirs / "meta.properties").exists():
            return
        log_dirs.mkdir(parents=True, exist_ok=True)
        cluster_file = self.home / "cluster.id"
        if not cluster_file.exists():
            # A KRaft cluster id is 16 random bytes in URL-safe base64 without padding.
            cluster_file.write_text(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))
        progress("kafka: formatting the KRaft storage (first start only)")
        run_checked(
            [
                java_binary(),
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
                *self._log_flags("storage-tool.log"),
                "-cp",
                f"{self._lib()}/*",
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(self.properties),
                # "=": an id may start with "-", which would read as an option.
                f"--cluster-id={cluster_file.read_text().strip()}",
                "--ignore-formatted",
            ],
            "kafka: storage format",
            self.home / "storage-tool.log",
        )

    def _lib(self) -> Path:
        if self.lib_dir is None:
            raise StackError("kafka: install() must run before the broker starts")
        return self.lib_dir

    def _log_flags(self, file_name: str) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile=file:{self.scripts / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.home.resolve()}",
            f"-Dkafka.log.file={file_name}",
            # Kafka logs its shutdown from its own hook; log4j's hook would close the file
            # first and lose the end of it.
            "-Dlog4j2.shutdownHookEnabled=false",
        ]

    def command(self) -> Sequence[str]:
        heap = os.environ.get("KAFKA_HEAP_OPTS", " ".join(HEAP)).split()
        return [
            java_binary(),
            *heap,
            *JVM_FLAGS,
            *self._log_flags("kafka.log"),
            "-cp",
            f"{self._lib()}/*",
            "kafka.Kafka",
            str(self.properties),
        ]

    def after_ready(self, progress: Progress) -> None:
        from mpp.kafka import ensure_topics

        created = ensure_topics(self.settings.kafka)
        if created:
            progress(f"kafka: created topics {', '.join(created)}")
