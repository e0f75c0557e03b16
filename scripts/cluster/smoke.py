"""Check a running local cluster end to end (after `mpp cluster up`; the stack for postgres).

Packs Debian's static busybox (apt-get install busybox-static) as localhost/mpp/busybox:1,
imports it with mpp.stack.cluster.import_image, runs an HTTP server pod behind a Service and
a toolbox pod, then from the toolbox: the Service by DNS name, the host gateway's forwarder
to PostgreSQL (10.244.0.1:15432), and that the outside (1.1.1.1:443) is NOT reachable.

    .venv/bin/python scripts/cluster/smoke.py      # exit 0 when every check passes
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mpp.config import get_settings
from mpp.stack.cluster import HOST_GATEWAY, Cluster, import_image
from mpp.stack.cluster_image import image_tar

IMAGE = "localhost/mpp/busybox:1"
PROBE_PORT = 18999
MANIFEST = f"""
apiVersion: v1
kind: Pod
metadata: {{name: smoke-echo, labels: {{app: smoke-echo}}}}
spec:
  containers:
  - name: httpd
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["/busybox", "sh", "-c", "mkdir -p /www && echo hello-from-pod > /www/index.html && exec /busybox httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {{name: smoke-echo}}
spec:
  selector: {{app: smoke-echo}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: smoke-toolbox}}
spec:
  containers:
  - name: toolbox
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["/netcheck", "sleep"]
"""  # noqa: E501


def build_netcheck(folder: Path) -> Path:
    """scripts/cluster/netcheck.go as a static program (Go's resolver, no libc)."""
    (folder / "src").mkdir()
    (folder / "src" / "main.go").write_text((Path(__file__).parent / "netcheck.go").read_text())
    (folder / "src" / "go.mod").write_text("module netcheck\n\ngo 1.26.0\n")
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local")
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(folder / "netcheck"), "."],
        cwd=folder / "src", env=env, check=True,
    )  # fmt: skip
    return folder / "netcheck"


def main() -> int:
    cluster = Cluster(get_settings())
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        print("needs Debian's static busybox: apt-get install busybox-static")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        netcheck = build_netcheck(Path(tmp))
        files = {
            "/busybox": (busybox.read_bytes(), 0o755),
            "/netcheck": (netcheck.read_bytes(), 0o755),
        }
        tar = Path(tmp) / "image.tar"
        tar.write_bytes(image_tar(IMAGE, files, ["/busybox"]))
        started = time.monotonic()
        import_image(tar)
        print(f"imported {IMAGE} in {time.monotonic() - started:.1f}s")
    subprocess.run(
        [str(cluster.bin_dir() / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "apply", "-f", "-"],  # type: ignore[operator]
        input=MANIFEST, text=True, check=True,
    )  # fmt: skip
    started = time.monotonic()
    wait = cluster.kubectl(
        "wait", "--for=condition=Ready", "pod/smoke-echo", "pod/smoke-toolbox", "--timeout=90s",
        timeout=100,
    )  # fmt: skip
    print(wait.stdout.strip() or wait.stderr.strip())
    print(f"pods Ready in {time.monotonic() - started:.1f}s")
    route = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True, text=True)
    words = route.stdout.split()
    host_ip = words[words.index("src") + 1] if "src" in words else "127.0.0.1"
    checks = {
        "DNS name of the Service": (
            "/busybox nslookup smoke-echo.default.svc.cluster.local", True),
        "HTTP to the Service by short name": ("/netcheck http http://smoke-echo/", True),
        "kubernetes Service by DNS": (
            "/busybox nslookup kubernetes.default.svc.cluster.local", True),
        "PostgreSQL via the host gateway": (f"/netcheck tcp {HOST_GATEWAY}:15432", True),
        "Kafka's cluster listener via the gateway": (
            f"/netcheck tcp {HOST_GATEWAY}:19094", True),
        "outside TCP 1.1.1.1:443 blocked": ("/netcheck tcp 1.1.1.1:443", False),
        f"host's own address {host_ip}:{PROBE_PORT} blocked": (
            f"/netcheck tcp {host_ip}:{PROBE_PORT}", False),
        "external name not resolved": ("/busybox nslookup example.com", False),
    }  # fmt: skip
    failed = 0
    # A listener of ours on every host address: pods must reach only the bridge address.
    listener = socket.create_server(("0.0.0.0", PROBE_PORT))  # noqa: S104
    for what, (command, should_work) in checks.items():
        result = cluster.kubectl(
            "exec", "smoke-toolbox", "--", "/busybox", "sh", "-c", command, timeout=30
        )
        output = result.stdout + result.stderr
        # A refused check must fail in the pod (not in kubectl exec): it says so itself.
        refused = "failed:" in output or "NXDOMAIN" in output
        ok = result.returncode == 0 if should_work else result.returncode != 0 and refused
        failed += not ok
        output = output.strip().replace("\n", " | ")[:160]
        print(f"{'PASS' if ok else 'FAIL'} {what}: exit {result.returncode} {output}")
    listener.close()
    cluster.kubectl("delete", "pod/smoke-echo", "pod/smoke-toolbox", "service/smoke-echo",
                    "--wait=false")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
