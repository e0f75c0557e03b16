"""`mpp cluster down`: pods' sandboxes first, then every process, mount, link and rule.

Order: the controllers stop (nothing recreates pods), the pods are deleted while the kubelet
still runs (it stops their sandboxes, so CNI removes veths and addresses), then the node
processes, the control plane, containerd and its shims. A sweep removes whatever a crash
left: processes in the pod cgroups, mounts under our folders, cni-* namespaces and veths,
the bridge, our nft table, kube-proxy's and the kubelet's iptables chains; the sysctls get
their values from before `up` back.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from mpp.stack.base import Progress
from mpp.stack.cluster_containerd import CONTAINERD_SOCKET, CONTAINERD_STATE
from mpp.stack.cluster_net import (
    bridge_ifindexes,
    delete_bridge,
    delete_cni_cache,
    delete_kubelet_chains,
    delete_nft,
    delete_pod_netns,
    kill_pod_processes,
    kill_shims,
    restore_sysctls,
    sh,
    unmount_all,
)

if TYPE_CHECKING:
    from mpp.stack.cluster import Cluster

PODS_GONE_S = 10.0


def tear_down(cluster: Cluster, progress: Progress) -> list[str]:
    other = cluster.other_owner()
    if other is not None:
        # The bridge, socket and nft table are the machine's: leave them to their owner.
        progress(f"cluster: the running cluster is another checkout's ({other}); not touched")
        return []
    by_name = {c.name: c for c in cluster.components()}
    stopped: list[str] = []

    def stop(*names: str) -> None:
        for name in names:
            # containerd: SIGTERM leaves the shims (and so the containers) running by design.
            if by_name[name].stop(progress, signal.SIGTERM):
                stopped.append(name)

    stop("kube-controller-manager", "kube-scheduler")
    if by_name["kube-apiserver"].owned_pid() and by_name["kubelet"].owned_pid():
        remove_pods(cluster, progress)
    stop("forwarder", "coredns", "kube-proxy", "kubelet")
    kill_pod_processes(progress)
    stop("kube-apiserver", "etcd", "containerd")
    kill_shims(CONTAINERD_SOCKET, progress)
    before = _before_up(cluster)
    unmount_all([cluster.dir, cluster.containerd_root, CONTAINERD_STATE], progress)
    delete_pod_netns(set(before.get("netns", [])), progress)
    bin_dir = cluster.bin_dir()
    if bin_dir is not None:
        sh([str(bin_dir / "kube-proxy"), "--cleanup"], timeout=60)
    delete_kubelet_chains()
    delete_bridge(progress)
    delete_nft(set(before.get("nft_tables", [])), progress)
    restore_sysctls(cluster.run_dir / "sysctls.json", progress)
    delete_cni_cache(bool(before.get("var_lib_cni")))
    # All sandboxes are gone: no address is in use any more.
    shutil.rmtree(cluster.dir / "cni-ipam", ignore_errors=True)
    shutil.rmtree(CONTAINERD_STATE, ignore_errors=True)
    (cluster.run_dir / "host-before.json").unlink(missing_ok=True)
    return stopped


def remove_pods(cluster: Cluster, progress: Progress) -> None:
    """Delete every pod; the kubelet stops their containers and sandboxes (CNI DEL)."""
    listing = cluster.kubectl("get", "pods", "-A", "-o", "name")
    if listing.returncode != 0 or not listing.stdout.strip():
        return
    count = len(listing.stdout.split())
    progress(f"cluster: deleting {count} pod(s) so the kubelet removes their sandboxes")
    cluster.kubectl(
        "delete", "pods", "--all", "-A", "--grace-period=0", "--force", "--wait=false",
        timeout=60,
    )  # fmt: skip
    deadline = time.monotonic() + PODS_GONE_S
    while time.monotonic() < deadline:
        if not bridge_ifindexes() and not _running_tasks():
            return
        time.sleep(0.5)
    progress("cluster: sandboxes still up after the wait; removing them by force")


def _running_tasks() -> list[str]:
    try:
        result = subprocess.run(
            ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io", "tasks", "ls"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return [line.split()[0] for line in result.stdout.splitlines() if " RUNNING" in line]


def _before_up(cluster: Cluster) -> dict[str, list[str]]:
    try:
        value: dict[str, list[str]] = json.loads((cluster.run_dir / "host-before.json").read_text())
    except (OSError, ValueError):
        return {}
    return value
