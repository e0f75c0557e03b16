"""The host side of the local cluster: bridge, nft table, sysctls, and the teardown sweep.

Everything here is undone by `mpp cluster down`: the bridge and our nft table go, the
sysctls get back the values they had before `up` (saved in the state dir), leftover pod
network namespaces, veths, mounts, shims and kubelet/kube-proxy iptables chains are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from mpp.stack.base import Progress, StackError, pid_alive
from mpp.stack.cluster_config import BRIDGE, HOST_GATEWAY, NFT_TABLE, SERVICE_CIDR, nft_ruleset

SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet",
)
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")
IPTABLES_TABLES = ("filter", "nat", "mangle")
# libcni's cache of results (containerd's CNI library has no option to move it).
CNI_CACHE = Path("/var/lib/cni")


def sh(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a host command, never raising (teardown keeps going); output captured."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 1, "", str(exc))


def must(argv: list[str], what: str) -> str:
    result = sh(argv)
    if result.returncode != 0:
        raise StackError(f"{what} failed: {' '.join(argv)}\n{(result.stdout + result.stderr)}")
    return result.stdout


# -- sysctls -------------------------------------------------------------------------------


def save_sysctls(state_file: Path) -> None:
    """Remember the sysctls' values before the first `up` (kept until `down` restores them)."""
    if state_file.exists():
        return
    values: dict[str, str] = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = Path("/proc/sys", name).read_text().strip()
    state_file.write_text(json.dumps(values, indent=2) + "\n")


def set_sysctl(name: str, value: str) -> None:
    try:
        Path("/proc/sys", name).write_text(value + "\n")
    except OSError as exc:
        raise StackError(f"cannot set {name.replace('/', '.')}={value}: {exc}") from exc


def restore_sysctls(state_file: Path, progress: Progress) -> None:
    try:
        values: dict[str, str] = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    for name, value in values.items():
        try:
            if Path("/proc/sys", name).read_text().strip() != value:
                Path("/proc/sys", name).write_text(value + "\n")
                progress(f"cluster: restored {name.replace('/', '.')}={value}")
        except OSError as exc:
            progress(f"cluster: could not restore {name}: {exc}")
    state_file.unlink(missing_ok=True)


# -- bridge and nft ------------------------------------------------------------------------


def bridge_exists() -> bool:
    return Path("/sys/class/net", BRIDGE).exists()


def ensure_bridge() -> None:
    if not bridge_exists():
        result = sh(["ip", "link", "add", BRIDGE, "type", "bridge"])
        if result.returncode != 0:
            raise StackError(
                f"cannot create the bridge {BRIDGE}: {result.stderr.strip()}; the cluster needs "
                "root with CAP_NET_ADMIN (a privileged container or a VM)"
            )
    addresses = sh(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if f"{HOST_GATEWAY}/24" not in addresses:
        must(["ip", "addr", "add", f"{HOST_GATEWAY}/24", "dev", BRIDGE], "bridge address")
    must(["ip", "link", "set", BRIDGE, "up"], "bridge up")
    # The host's own connections to Service IPs: kube-proxy DNATs them to a pod, whose reply
    # must come back to an address on the bridge (the input chain drops the others). Without
    # this route they would leave by the default route, from the external interface's address.
    # Deleting the bridge deletes the route.
    must(
        ["ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", HOST_GATEWAY],
        "route to the Service network",
    )


def delete_bridge(progress: Progress) -> None:
    if bridge_exists():
        sh(["ip", "link", "delete", BRIDGE])
        progress(f"cluster: deleted the bridge {BRIDGE}")


def ensure_nft() -> None:
    """(Re)load our table atomically: delete and add in one nft transaction."""
    script = ""
    if sh(["nft", "list", "table", "inet", NFT_TABLE]).returncode == 0:
        script = f"delete table inet {NFT_TABLE}\n"
    result = subprocess.run(
        ["nft", "-f", "-"],
        input=script + nft_ruleset(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"nft: cannot load table inet {NFT_TABLE}: {result.stderr.strip()}")


def nft_tables() -> set[str]:
    return {line.strip() for line in sh(["nft", "list", "tables"]).stdout.splitlines() if line}


def delete_nft(before_up: set[str], progress: Progress) -> None:
    if sh(["nft", "list", "table", "inet", NFT_TABLE]).returncode == 0:
        sh(["nft", "delete", "table", "inet", NFT_TABLE])
        progress(f"cluster: deleted nft table inet {NFT_TABLE}")
    # iptables-nft's tables that the cluster brought (filter, nat...) and that are now empty.
    for table in nft_tables() - before_up:
        family_name = table.removeprefix("table ").split()
        if len(family_name) != 2 or family_name[0] not in ("ip", "ip6"):
            continue
        listing = sh(["nft", "list", "table", *family_name]).stdout
        if not any(_is_rule(line) for line in listing.splitlines()):
            sh(["nft", "delete", "table", *family_name])


def _is_rule(line: str) -> bool:
    text = line.strip()
    if not text or text in ("}", "{"):
        return False
    return not text.startswith(("table ", "chain ", "type ", "policy ", "comment "))


# -- iptables chains -----------------------------------------------------------------------


def delete_kubelet_chains() -> None:
    """kubelet's own chains, which `kube-proxy --cleanup` leaves (v4 and v6)."""
    for binary in ("iptables", "ip6tables"):
        for table in IPTABLES_TABLES:
            listing = sh([f"{binary}-save", "-t", table]).stdout
            present = [c for c in KUBELET_CHAINS if f":{c} " in listing]
            if not present:
                continue
            for line in listing.splitlines():
                if line.startswith("-A ") and any(f"-j {c}" in line for c in present):
                    rule = line.split()[1:]
                    if rule[0] not in present:
                        sh([binary, "-t", table, "-D", *rule])
            for chain in present:
                sh([binary, "-t", table, "-F", chain])
            for chain in present:
                sh([binary, "-t", table, "-X", chain])


# -- leftovers of pods ---------------------------------------------------------------------


def cni_netns() -> list[str]:
    return sorted(n.split()[0] for n in sh(["ip", "netns", "list"]).stdout.splitlines() if n)


def bridge_ifindexes() -> set[str]:
    ports = Path("/sys/class/net", BRIDGE, "brif")
    indexes: set[str] = set()
    with contextlib.suppress(OSError):
        for port in ports.iterdir():
            with contextlib.suppress(OSError):
                indexes.add(Path("/sys/class/net", port.name, "ifindex").read_text().strip())
    return indexes


def delete_pod_netns(before_up: set[str], progress: Progress) -> None:
    """cni-* namespaces attached to our bridge, or born since `up` (and not someone else's)."""
    ours = bridge_ifindexes()
    for name in cni_netns():
        if not name.startswith("cni-"):
            continue
        links = sh(["ip", "-n", name, "-o", "link"]).stdout
        attached = any(f"@if{index}:" in links for index in ours)
        if attached or name not in before_up:
            sh(["ip", "netns", "delete", name])
            progress(f"cluster: deleted leftover network namespace {name}")
    with contextlib.suppress(OSError):
        for port in Path("/sys/class/net", BRIDGE, "brif").iterdir():
            sh(["ip", "link", "delete", port.name])
            progress(f"cluster: deleted leftover veth {port.name}")


def delete_cni_cache(existed_before: bool) -> None:
    """libcni's result cache: our entries, and the folder when `up` made it and it is empty."""
    # Results of our network ("mpp") whose sandboxes are gone (no CNI DEL after a crash).
    for result in CNI_CACHE.glob("results/mpp-*-eth0"):
        sandbox = result.name.removeprefix("mpp-").removesuffix("-eth0")
        (result.parent / f"cni-loopback-{sandbox}-lo").unlink(missing_ok=True)
        result.unlink(missing_ok=True)
    if existed_before or not CNI_CACHE.is_dir():
        return
    if any(p.is_file() for p in CNI_CACHE.rglob("*")):
        return
    shutil.rmtree(CNI_CACHE, ignore_errors=True)


def mounts_under(roots: list[Path]) -> list[str]:
    found: list[str] = []
    prefixes = [str(r.resolve()).rstrip("/") + "/" for r in roots]
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1].replace("\\040", " ")
            if any(point.startswith(p) or point + "/" == p for p in prefixes):
                found.append(point)
    return found


def unmount_all(roots: list[Path], progress: Progress) -> None:
    for _ in range(3):
        points = sorted(set(mounts_under(roots)), key=len, reverse=True)
        if not points:
            return
        for point in points:
            if sh(["umount", point]).returncode != 0:
                sh(["umount", "-l", point])
    left = mounts_under(roots)
    if left:
        progress(f"cluster: could not unmount {', '.join(left)}")


def shim_pids(socket: Path) -> list[int]:
    """containerd-shim processes serving our containerd (they outlive it by design)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in argv:
            pids.append(int(entry.name))
    return pids


def kill_pod_processes(progress: Progress) -> None:
    """Every process left in kubelet's pod cgroups, then the cgroups themselves."""
    for controller in sorted(Path("/sys/fs/cgroup").glob("*/kubepods")):
        for procs in controller.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.2)
    for controller in sorted(Path("/sys/fs/cgroup").glob("*/kubepods")):
        folders = sorted(
            (p for p in controller.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        )
        for folder in [*folders, controller]:
            with contextlib.suppress(OSError):
                folder.rmdir()


def kill_shims(socket: Path, progress: Progress) -> None:
    pids = shim_pids(socket)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pids:
        progress(f"cluster: killed {len(pids)} leftover containerd shim(s)")
