"""A real single-node Kubernetes cluster on this machine, without Docker: `mpp cluster up`.

containerd (its own root under ~/.cache/mpp/containerd, state and socket under
/run/mpp-containerd), etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
kube-proxy (iptables) and CoreDNS run as host processes, built from source by
scripts/cluster/build.sh. Pods live on the bridge mpp0 (10.244.0.0/24, the host is
10.244.0.1); an nft table keeps them off the external network; a forwarder lets them reach
the local stack's loopback servers at 10.244.0.1. State, PKI, configs, logs and pid files
live in <repo>/.stack/cluster/. See docs/cluster.md.

For other components:
    import_image(tar)               load an image tar (docker-archive or OCI) for pods
    kubeconfig_path(settings)       the admin kubeconfig
    HOST_GATEWAY                    where pods reach the local stack (Kafka: port 19094)

containerd's images and paths are in mpp.stack.cluster_containerd (re-exported here).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from mpp.config import Settings, host_port
from mpp.stack.base import (
    Progress,
    StackError,
    State,
    Status,
    port_open,
)
from mpp.stack.cluster_config import (
    APISERVER_PORT,
    CONTROLLER_MANAGER_PORT,
    COREDNS_READY_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    HOST_GATEWAY,
    KAFKA_CLUSTER_PORT,
    KUBE_PROXY_HEALTHZ_PORT,
    KUBELET_HEALTHZ_PORT,
    SCHEDULER_PORT,
)
from mpp.stack.cluster_containerd import (
    CONTAINERD_SOCKET,
    OWNER_FILE,
    image_present,
    import_image,
)
from mpp.stack.cluster_proc import Component, Probe

__all__ = [
    "CONTAINERD_SOCKET",
    "HOST_GATEWAY",
    "KAFKA_CLUSTER_PORT",
    "Cluster",
    "StackError",
    "cluster_dir",
    "image_present",
    "import_image",
    "kubeconfig_path",
]

# The TCP ports each component listens on (checked free before it starts).
PORTS: dict[str, list[tuple[str, int]]] = {
    "etcd": [("127.0.0.1", ETCD_CLIENT_PORT), ("127.0.0.1", ETCD_PEER_PORT)],
    "kube-apiserver": [(HOST_GATEWAY, APISERVER_PORT)],
    "kube-controller-manager": [("127.0.0.1", CONTROLLER_MANAGER_PORT)],
    "kube-scheduler": [("127.0.0.1", SCHEDULER_PORT)],
    "kubelet": [("127.0.0.1", KUBELET_HEALTHZ_PORT), (HOST_GATEWAY, 10250)],
    "kube-proxy": [("127.0.0.1", KUBE_PROXY_HEALTHZ_PORT), ("127.0.0.1", 10249)],
    "coredns": [(HOST_GATEWAY, 53), ("127.0.0.1", COREDNS_READY_PORT)],
}
CNI_BIN_DIR = Path("/usr/lib/cni")
# Deadlines (seconds) for each step; a step that misses one fails with its log's tail.
READY_S = {"containerd": 30.0, "etcd": 30.0, "kube-apiserver": 90.0}
OTHERS_READY_S = 60.0
NODE_READY_S = 120.0


def cluster_dir(settings: Settings) -> Path:
    from mpp.stack import stack_dir

    return stack_dir(settings) / "cluster"


def kubeconfig_path(settings: Settings) -> Path:
    """The admin kubeconfig `mpp cluster up` writes (also to ~/.kube/config when free)."""
    return cluster_dir(settings) / "kubeconfig"


def containerd_root(settings: Settings) -> Path:
    return settings.stack.cache_dir / "containerd"


def node_name() -> str:
    return socket.gethostname().lower()


class Cluster:
    """The local cluster's processes and host setup; up, down and status."""

    def __init__(self, settings: Settings, state_dir: Path | None = None) -> None:
        self.settings = settings
        # Another checkout's state dir: to clear what a cluster that was killed left behind.
        self.dir = state_dir or cluster_dir(settings)
        self.run_dir = self.dir / "run"
        self.log_dir = self.dir / "logs"
        self.conf_dir = self.dir / "config"
        self.pki_dir = self.dir / "pki"
        self.containerd_root = containerd_root(settings)
        self.node = node_name()

    # -- paths --------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def conf(self, name: str) -> Path:
        return self.conf_dir / name

    def bin_dir(self) -> Path | None:
        try:
            path = Path((self.run_dir / "bin-dir").read_text().strip())
        except OSError:
            return None
        return path if (path / "kubectl").exists() else None

    def kubectl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        bin_dir = self.bin_dir()
        if bin_dir is None:
            raise StackError("the cluster was never built here: run `mpp cluster up`")
        return subprocess.run(
            [str(bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}",
             "--request-timeout=10s", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    # -- the processes ------------------------------------------------------------------------

    def components(self) -> list[Component]:
        from mpp.stack.cluster_config import (
            Pki,
            apiserver_args,
            controller_manager_args,
            etcd_args,
            kubelet_args,
            scheduler_args,
        )
        from mpp.stack.cluster_proc import command_probe, http_probe, insecure_tls

        bin_dir = self.bin_dir() or Path("/nonexistent")
        pki = Pki(self.pki_dir)
        ca = ssl.create_default_context(cafile=str(pki.ca)) if pki.ca.exists() else None
        forwarded = ",".join(str(p) for p in self.forwarded_ports())

        def make(name: str, argv: list[str], probe: Probe, endpoint: str) -> Component:
            ports = tuple(PORTS.get(name, ()))
            return Component(name, argv, probe, endpoint, self.run_dir, self.log_dir, ports)

        def kube(name: str) -> str:
            return str(bin_dir / name)

        return [
            make(
                "containerd",
                ["containerd", "--config", str(self.conf("containerd.toml"))],
                command_probe(["ctr", "--address", str(CONTAINERD_SOCKET), "version"]),
                str(CONTAINERD_SOCKET),
            ),
            make(
                "etcd",
                [kube("etcd"), *etcd_args(self.dir / "etcd")],
                http_probe(f"http://127.0.0.1:{ETCD_CLIENT_PORT}/health"),
                f"127.0.0.1:{ETCD_CLIENT_PORT}",
            ),
            make(
                "kube-apiserver",
                [kube("kube-apiserver"), *apiserver_args(pki)],
                http_probe(f"https://{HOST_GATEWAY}:{APISERVER_PORT}/readyz", ca),
                f"{HOST_GATEWAY}:{APISERVER_PORT}",
            ),
            make(
                "kube-controller-manager",
                [
                    kube("kube-controller-manager"),
                    *controller_manager_args(pki, self.conf("controller-manager.kubeconfig")),
                ],
                http_probe(f"https://127.0.0.1:{CONTROLLER_MANAGER_PORT}/healthz", insecure_tls()),
                f"127.0.0.1:{CONTROLLER_MANAGER_PORT}",
            ),
            make(
                "kube-scheduler",
                [kube("kube-scheduler"), *scheduler_args(self.conf("scheduler.kubeconfig"))],
                http_probe(f"https://127.0.0.1:{SCHEDULER_PORT}/healthz", insecure_tls()),
                f"127.0.0.1:{SCHEDULER_PORT}",
            ),
            make(
                "kubelet",
                [
                    kube("kubelet"),
                    *kubelet_args(
                        self.conf("kubelet.json"),
                        self.conf("kubelet.kubeconfig"),
                        self.dir / "kubelet",
                        self.node,
                    ),
                ],
                http_probe(f"http://127.0.0.1:{KUBELET_HEALTHZ_PORT}/healthz"),
                f"{HOST_GATEWAY}:10250",
            ),
            make(
                "kube-proxy",
                [
                    kube("kube-proxy"),
                    f"--config={self.conf('kube-proxy.json')}",
                    f"--hostname-override={self.node}",
                ],
                http_probe(f"http://127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}/healthz"),
                "iptables",
            ),
            make(
                "coredns",
                [kube("coredns"), "-conf", str(self.conf("Corefile"))],
                http_probe(f"http://127.0.0.1:{COREDNS_READY_PORT}/ready"),
                f"{HOST_GATEWAY}:53",
            ),
            make(
                "forwarder",
                [
                    sys.executable,
                    str(Path(__file__).with_name("cluster_forwarder.py")),
                    "--listen",
                    HOST_GATEWAY,
                    "--target",
                    "127.0.0.1",
                    "--ports",
                    forwarded,
                ],
                _tcp_probe(HOST_GATEWAY, self.forwarded_ports()[0]),
                f"{HOST_GATEWAY}:{{{forwarded}}}",
            ),
        ]

    def forwarded_ports(self) -> list[int]:
        """The local stack's loopback ports, plus Kafka's listener for pods."""
        s = self.settings
        addresses = [
            host_port(s.kafka.bootstrap_servers.split(",")[0], 19092),
            host_port(s.neo4j.uri, 17687),
            (s.postgres.host, s.postgres.port),
            host_port(s.redis.url, 16379),
            host_port(s.milvus.uri, 19530),
            host_port(s.warehouse.bigquery_endpoint or "http://127.0.0.1:19050", 19050),
        ]
        ports = {port for host, port in addresses if host in ("127.0.0.1", "localhost")}
        return sorted(ports | {KAFKA_CLUSTER_PORT})

    # -- up -----------------------------------------------------------------------------------

    def up(self, progress: Progress) -> list[Status]:
        from mpp.stack.cluster_up import bring_up

        return bring_up(self, progress)

    def down(self, progress: Progress) -> list[str]:
        from mpp.stack.cluster_down import tear_down

        return tear_down(self, progress)

    # -- status -------------------------------------------------------------------------------

    def node_ready(self, since: float | None = None) -> str | None:
        """None when the node is Ready (with a heartbeat after ``since``, a Unix time)."""
        if self.bin_dir() is None or not self.kubeconfig.exists():
            return "not set up"
        ready = '{.status.conditions[?(@.type=="Ready")]'
        try:
            result = self.kubectl(
                "get", "node", self.node, "-o",
                f"jsonpath={ready}.status}} {ready}.lastHeartbeatTime}} {{.spec.taints[*].key}}",
                timeout=15,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "kubectl timed out"
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            return lines[-1] if lines else f"kubectl exit {result.returncode}"
        parts = result.stdout.split()  # status, heartbeat, then the taints' keys
        status = parts[0] if parts else ""
        beat = parts[1] if len(parts) > 1 else ""
        taints = parts[2:]
        if status != "True":
            return f"Ready={status or 'unknown'}"
        # The node controller lifts these a moment after Ready; pods do not schedule before.
        blocking = [t for t in taints if t.startswith("node.kubernetes.io/")]
        if blocking:
            return f"tainted {', '.join(blocking)}"
        if since is not None:
            # A Ready left in etcd by the kubelet before this one does not count.
            when = datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp() if beat else 0
            if when < int(since):
                return "no heartbeat from the new kubelet yet"
        return None

    def status(self) -> list[Status]:
        statuses: list[Status] = []
        for component in self.components():
            pid = component.owned_pid()
            problem = component.probe() if pid else "not running"
            state = State.OURS if pid and problem is None else State.DOWN
            detail = "" if state == State.OURS else (problem or "")
            statuses.append(
                Status(component.name, component.endpoint, state, pid, component.log_file, detail)
            )
        by_name = {s.name: s for s in statuses}
        if by_name["kube-apiserver"].state != State.OURS:
            ready: str | None = "API server down"
        elif by_name["kubelet"].state != State.OURS:
            ready = "kubelet down"
        else:
            ready = self.node_ready()
        state = State.OURS if ready is None else State.DOWN
        statuses.append(
            Status("node", self.node, state, None, None, "Ready" if ready is None else ready)
        )
        return statuses

    def containerd_answers(self) -> bool:
        """Whether a containerd listens on the cluster's socket (whoever started it)."""
        probe = socket.socket(socket.AF_UNIX)
        probe.settimeout(2)
        try:
            probe.connect(str(CONTAINERD_SOCKET))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def other_owner(self) -> str | None:
        """The state dir of another clone whose cluster holds this machine, if any."""
        try:
            owner = OWNER_FILE.read_text().strip()
        except OSError:
            return None
        return None if owner in ("", str(self.dir)) else owner

    def memory_mib(self) -> dict[str, float]:
        """Resident memory of each running component (with its children), in MiB."""
        return {c.name: c.rss_kib() / 1024 for c in self.components() if c.owned_pid()}


def _tcp_probe(host: str, port: int) -> Probe:

    def probe() -> str | None:
        return None if port_open(host, port) else f"{host}:{port} closed"

    return probe
