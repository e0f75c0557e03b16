"""`mpp cluster up`: build (once), set up the host network, start each component, wait.

Idempotent: with everything running and the node Ready it only says "reused"; otherwise
it (re)starts only what is not running. Every wait has a deadline and a failure names the
component's log file with its last lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mpp.stack.base import Progress, StackError, Status, apt_install, running_as_root
from mpp.stack.cluster import NODE_READY_S, OTHERS_READY_S, READY_S
from mpp.stack.cluster_config import (
    BRIDGE,
    KUBECONFIG_MARK,
    PAUSE_IMAGE,
    Pki,
    apiserver_url,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubeconfig,
    kubelet_config,
)
from mpp.stack.cluster_containerd import (
    CONTAINERD_SOCKET,
    CONTAINERD_STATE,
    OWNER_FILE,
    SNAPSHOTTER_FILE,
    image_present,
    import_image,
    overlay_works,
)
from mpp.stack.cluster_dns import bootstrap_manifests, corefile
from mpp.stack.cluster_net import (
    CNI_CACHE,
    cni_netns,
    ensure_bridge,
    ensure_nft,
    nft_tables,
    save_sysctls,
    set_sysctl,
)

if TYPE_CHECKING:
    from mpp.stack.cluster import Cluster

# The Debian packages the cluster runs on, by a file each provides.
PACKAGES = {
    "/usr/bin/containerd": "containerd",
    "/usr/bin/ctr": "containerd",
    "/usr/sbin/runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/sbin/iptables": "iptables",
    "/usr/sbin/nft": "nftables",
    "/usr/sbin/conntrack": "conntrack",
    "/usr/bin/openssl": "openssl",
    "/usr/sbin/ip": "iproute2",
}
BUILD_SCRIPT = "scripts/cluster/build.sh"
# The client certificate each kubeconfig carries: (file, certificate name, user name).
KUBECONFIGS = (
    ("controller-manager.kubeconfig", "controller-manager", "system:kube-controller-manager"),
    ("scheduler.kubeconfig", "scheduler", "system:kube-scheduler"),
    ("kubelet.kubeconfig", "kubelet-client", "system:node"),
    ("kube-proxy.kubeconfig", "kube-proxy", "system:kube-proxy"),
    ("coredns.kubeconfig", "coredns", "mpp:coredns"),
)


def bring_up(cluster: Cluster, progress: Progress) -> list[Status]:
    started = time.monotonic()
    preflight(progress)
    if cluster.bin_dir() is not None and _all_running(cluster):
        progress("cluster: reused (every component runs and the node is Ready)")
        return cluster.status()
    other = cluster.other_owner()
    if CONTAINERD_STATE.exists() and not cluster.containerd_answers():
        # A cluster whose processes were killed (a session or CI run that ended, a reboot
        # of the processes but not of /run): its mounts, pod namespaces, veths, rules and
        # sysctls are still there, and stale pod addresses would clash with new ones.
        owner = Path(other) if other is not None else cluster.dir
        progress(f"cluster: the cluster of {owner} is not running; clearing what it left")
        from mpp.stack.cluster import Cluster
        from mpp.stack.cluster_down import tear_down

        tear_down(Cluster(cluster.settings, state_dir=owner), progress)
    elif other is not None and CONTAINERD_SOCKET.exists():
        raise StackError(
            f"another checkout's cluster runs on this machine ({other}); one cluster fits a "
            f"machine: run `mpp cluster down` there first"
        )
    build(cluster, progress)
    for folder in (cluster.run_dir, cluster.log_dir, cluster.conf_dir, cluster.containerd_root):
        folder.mkdir(parents=True, exist_ok=True)
    host_network(cluster)
    from mpp.stack.cluster_pki import ensure_pki

    ensure_pki(Pki(cluster.pki_dir), cluster.node, progress)
    write_configs(cluster)
    by_name = {c.name: c for c in cluster.components()}
    # The runtime and the store first, then the API server, then everything else at once.
    for name in ("containerd", "etcd", "kube-apiserver"):
        component = by_name[name]
        component.launch(progress)
        component.wait_ready(time.monotonic() + READY_S[name], progress)
        if name == "containerd":
            ensure_pause_image(cluster, progress)
    apply = cluster.kubectl("apply", "-f", str(cluster.conf("bootstrap.json")))
    if apply.returncode != 0:
        raise StackError(f"kubectl apply of the cluster's own objects failed:\n{apply.stderr}")
    rest = [c for name, c in by_name.items() if name not in READY_S]
    for component in rest:
        component.launch(progress)
    deadline = time.monotonic() + OTHERS_READY_S
    for component in rest:
        component.wait_ready(deadline, progress)
    wait_node_ready(cluster, progress)
    write_user_kubeconfig(cluster.kubeconfig.read_text(), progress)
    progress(
        f"cluster: ready in {time.monotonic() - started:.1f}s (kubeconfig: {cluster.kubeconfig})"
    )
    return cluster.status()


def _all_running(cluster: Cluster) -> bool:
    for component in cluster.components():
        if component.owned_pid() is None or component.probe() is not None:
            return False
    return cluster.node_ready() is None


def build(cluster: Cluster, progress: Progress) -> None:
    """scripts/cluster/build.sh: builds once (~15 min), then only prints its bin folder."""
    from mpp.stack import repo_root

    script = repo_root() / BUILD_SCRIPT
    log_file = cluster.log_dir / "build.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MPP_CACHE_DIR=str(cluster.settings.stack.cache_dir))
    lines: list[str] = []
    with log_file.open("w") as log:
        process = subprocess.Popen(
            ["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env,
        )  # fmt: skip
        assert process.stderr is not None and process.stdout is not None
        for line in process.stderr:
            log.write(line)
            # Step lines as progress; Go's one line per compiled package only in the log.
            step = line.startswith("[cluster build] ") and not line.startswith("[cluster build]  ")
            if step and "reusing" not in line:
                progress(line.rstrip().replace("[cluster build] ", "cluster build: "))
        lines = process.stdout.read().split()
        code = process.wait()
    if code != 0 or not lines:
        raise StackError(
            f"building the cluster's programs failed (exit {code}); see {log_file}:\n"
            + "\n".join(log_file.read_text().splitlines()[-15:])
        )
    (cluster.run_dir / "bin-dir").parent.mkdir(parents=True, exist_ok=True)
    (cluster.run_dir / "bin-dir").write_text(lines[-1] + "\n")


def host_network(cluster: Cluster) -> None:
    """Bridge, our nft table, then forwarding (the nft drop is in place before it is on)."""
    before = cluster.run_dir / "host-before.json"
    if not before.exists():
        save_json(
            before,
            {
                "netns": cni_netns(),
                "nft_tables": sorted(nft_tables()),
                "var_lib_cni": [str(CNI_CACHE)] if CNI_CACHE.exists() else [],
            },
        )
    save_sysctls(cluster.run_dir / "sysctls.json")
    ensure_bridge()
    ensure_nft()
    set_sysctl("net/bridge/bridge-nf-call-iptables", "1")
    set_sysctl("net/ipv4/ip_forward", "1")


def write_configs(cluster: Cluster) -> None:
    pki = Pki(cluster.pki_dir)
    ca = pki.ca.read_text()
    admin = kubeconfig(
        apiserver_url(), ca, pki.crt("admin").read_text(), pki.key("admin").read_text(), "admin"
    )
    _write(cluster.kubeconfig, admin, 0o600)
    for file_name, cert, user in KUBECONFIGS:
        content = kubeconfig(
            apiserver_url(), ca, pki.crt(cert).read_text(), pki.key(cert).read_text(), user
        )
        _write(cluster.conf(file_name), content, 0o600)
    snapshotter = _snapshotter(cluster)
    cni_dir = cluster.conf_dir / "cni"
    cni_dir.mkdir(parents=True, exist_ok=True)
    _write(cni_dir / "10-mpp.conflist", cni_config(cluster.dir / "cni-ipam"))
    from mpp.stack.cluster import CNI_BIN_DIR

    _write(
        cluster.conf("containerd.toml"),
        containerd_config(
            cluster.containerd_root, CONTAINERD_STATE, CONTAINERD_SOCKET, cni_dir, CNI_BIN_DIR,
            snapshotter,
        ),
    )  # fmt: skip
    _write(cluster.conf("kubelet.json"), kubelet_config(pki, CONTAINERD_SOCKET))
    _write(
        cluster.conf("kube-proxy.json"), kube_proxy_config(cluster.conf("kube-proxy.kubeconfig"))
    )
    _write(cluster.conf("Corefile"), corefile(cluster.conf("coredns.kubeconfig")))
    _write(cluster.conf("bootstrap.json"), bootstrap_manifests())


def _snapshotter(cluster: Cluster) -> str:
    """overlayfs where the kernel allows it here, else native; kept with containerd's root."""
    choice_file = cluster.containerd_root / "mpp-snapshotter"
    if choice_file.exists():
        choice = choice_file.read_text().strip()
    else:
        choice = "overlayfs" if overlay_works(cluster.containerd_root) else "native"
        choice_file.write_text(choice + "\n")
    CONTAINERD_STATE.mkdir(parents=True, exist_ok=True)
    SNAPSHOTTER_FILE.write_text(choice + "\n")
    OWNER_FILE.write_text(f"{cluster.dir}\n")
    return choice


def _write(path: Path, content: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != content:
        path.write_text(content)
    path.chmod(mode)


def ensure_pause_image(cluster: Cluster, progress: Progress) -> None:
    if image_present(PAUSE_IMAGE):
        return
    from mpp.stack.cluster_image import write_program_image

    bin_dir = cluster.bin_dir()
    assert bin_dir is not None
    tar = write_program_image(cluster.conf("pause-image.tar"), PAUSE_IMAGE, bin_dir / "pause")
    progress(f"cluster: importing the sandbox image {PAUSE_IMAGE}")
    import_image(tar)


def wait_node_ready(cluster: Cluster, progress: Progress) -> None:
    deadline = time.monotonic() + NODE_READY_S
    waited = time.monotonic()
    problem: str | None = "not checked"
    kubelet_pid_file = cluster.run_dir / "kubelet.pid"
    since = kubelet_pid_file.stat().st_mtime if kubelet_pid_file.exists() else None
    while time.monotonic() < deadline:
        problem = cluster.node_ready(since)
        if problem is None:
            progress(f"node {cluster.node}: Ready")
            return
        if time.monotonic() - waited > 10:
            progress(f"node {cluster.node}: waiting for Ready ({problem})")
            waited = time.monotonic()
        time.sleep(1)
    kubelet = cluster.log_dir / "kubelet.log"
    from mpp.stack.base import tail

    raise StackError(
        f"node {cluster.node} not Ready within {NODE_READY_S:.0f}s ({problem}); "
        f"see {kubelet}:\n{tail(kubelet)}"
    )


def preflight(progress: Progress) -> None:
    """Say why the cluster cannot run here, and what to do, before touching anything."""
    if not running_as_root():
        raise StackError(
            "the cluster needs root (bridge, iptables, containerd, mounts): run "
            "`sudo .venv/bin/mpp cluster up`"
        )
    cgroups = Path("/sys/fs/cgroup")
    if not ((cgroups / "memory").is_dir() or (cgroups / "cgroup.controllers").exists()):
        raise StackError(
            "no cgroup filesystem at /sys/fs/cgroup: the kubelet needs one (mount cgroups "
            "or run in a VM or a privileged container)"
        )
    if not Path("/dev/net/tun").exists():
        raise StackError(
            "no /dev/net/tun: this sandbox has no network devices for pods; run in a VM "
            "or a container started with --device /dev/net/tun --cap-add NET_ADMIN"
        )
    missing = sorted({pkg for path, pkg in PACKAGES.items() if not Path(path).exists()})
    if missing:
        apt_install(missing, progress)
    if BRIDGE not in os.listdir("/sys/class/net") and not _can_make_bridge():
        raise StackError(
            "cannot create a network bridge here (tried a test bridge): the cluster needs "
            "CAP_NET_ADMIN; run as root in a VM or a privileged container"
        )


def _can_make_bridge() -> bool:
    test = "mpp-probe0"
    made = subprocess.run(
        ["ip", "link", "add", test, "type", "bridge"], capture_output=True, check=False
    )
    if made.returncode != 0:
        return False
    subprocess.run(["ip", "link", "delete", test], capture_output=True, check=False)
    return True


def write_user_kubeconfig(content: str, progress: Progress) -> None:
    """~/.kube/config gets ours when absent or ours before; a user's own is never touched."""
    target = Path.home() / ".kube" / "config"
    if target.exists():
        try:
            first = target.read_text().splitlines()[:1]
        except OSError:
            first = []
        if first != [KUBECONFIG_MARK]:
            progress(f"cluster: {target} is not ours, left as is (use KUBECONFIG)")
            return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    target.chmod(0o600)


def save_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
