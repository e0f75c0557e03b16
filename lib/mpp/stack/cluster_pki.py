"""The local cluster's certificates, made once with openssl under the state dir's pki/.

One CA signs everything: the API server's serving certificate (the kubernetes Service IP,
the bridge address and the usual names), the kubelet's serving certificate, and a client
certificate per component. The service-account key pair signs pods' tokens. Files that
exist are kept, so `up` after `up` changes nothing.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mpp.stack.base import Progress, run_checked
from mpp.stack.cluster_config import CLUSTER_DOMAIN, HOST_GATEWAY, KUBERNETES_SERVICE_IP, Pki

DAYS = "3650"


@dataclass(frozen=True)
class Cert:
    name: str
    subject: str
    sans: tuple[str, ...] = ()
    server: bool = False


def certificates(node_name: str) -> list[Cert]:
    """What the cluster needs signed (the subject's O is the user's group)."""
    api_sans = (
        f"IP:{KUBERNETES_SERVICE_IP}",
        f"IP:{HOST_GATEWAY}",
        "IP:127.0.0.1",
        "DNS:localhost",
        f"DNS:{node_name}",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        f"DNS:kubernetes.default.svc.{CLUSTER_DOMAIN}",
    )
    return [
        Cert("apiserver", "/CN=kube-apiserver", api_sans, server=True),
        Cert("kubelet", f"/CN={node_name}", (f"IP:{HOST_GATEWAY}", f"DNS:{node_name}"), True),
        Cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client"),
        Cert("admin", "/O=system:masters/CN=mpp-admin"),
        Cert("controller-manager", "/CN=system:kube-controller-manager"),
        Cert("scheduler", "/CN=system:kube-scheduler"),
        Cert("kube-proxy", "/CN=system:kube-proxy"),
        Cert("kubelet-client", f"/O=system:nodes/CN=system:node:{node_name}"),
        Cert("coredns", "/CN=mpp:coredns"),
        # The aggregation layer's client (API server -> extension API servers).
        Cert("front-proxy-client", "/CN=front-proxy-client"),
    ]


def extensions(cert: Cert) -> str:
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=" + ("serverAuth" if cert.server else "clientAuth"),
    ]
    if cert.sans:
        lines.append("subjectAltName=" + ",".join(cert.sans))
    return "\n".join(lines) + "\n"


def ensure_pki(pki: Pki, node_name: str, progress: Progress) -> None:
    pki.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.dir, 0o700)
    made: list[str] = []
    if not (pki.ca.exists() and pki.key("ca").exists()):
        _genkey(pki.key("ca"))
        run_checked(
            [
                "openssl", "req", "-x509", "-new", "-key", str(pki.key("ca")),
                "-subj", "/CN=mpp-local-ca", "-days", DAYS, "-out", str(pki.ca),
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            ],
            "openssl: cluster CA",
        )  # fmt: skip
        made.append("ca")
    if not (pki.dir / "sa.key").exists():
        _genkey(pki.dir / "sa.key")
        run_checked(
            ["openssl", "pkey", "-in", str(pki.dir / "sa.key"), "-pubout",
             "-out", str(pki.dir / "sa.pub")],
            "openssl: service-account public key",
        )  # fmt: skip
        made.append("service-account keys")
    for cert in certificates(node_name):
        if pki.crt(cert.name).exists() and pki.key(cert.name).exists():
            continue
        _sign(pki, cert)
        made.append(cert.name)
    if made:
        progress(f"cluster: made certificates: {', '.join(made)}")


def _genkey(path: Path) -> None:
    run_checked(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
         "-out", str(path)],
        f"openssl: key {path.name}",
    )  # fmt: skip
    os.chmod(path, 0o600)


def _sign(pki: Pki, cert: Cert) -> None:
    key, crt = pki.key(cert.name), pki.crt(cert.name)
    _genkey(key)
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "req.csr"
        ext = Path(tmp) / "ext.cnf"
        ext.write_text(extensions(cert))
        run_checked(
            ["openssl", "req", "-new", "-key", str(key), "-subj", cert.subject,
             "-out", str(csr)],
            f"openssl: request for {cert.name}",
        )  # fmt: skip
        run_checked(
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki.ca),
             "-CAkey", str(pki.key("ca")), "-CAcreateserial", "-days", DAYS,
             "-extfile", str(ext), "-out", str(crt)],
            f"openssl: sign {cert.name}",
        )  # fmt: skip
