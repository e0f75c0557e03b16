"""CoreDNS and the objects that make it the cluster's DNS: pure renderings (no I/O).

CoreDNS runs as a host process on the bridge address; the kube-dns Service (10.96.0.10) has
no selector and a hand-made EndpointSlice pointing at 10.244.0.1, so kube-proxy sends pods'
queries there. Names outside the cluster are answered NXDOMAIN: nothing is forwarded out.
"""

from __future__ import annotations

import json
from pathlib import Path

from mpp.stack.cluster_config import (
    CLUSTER_DNS,
    CLUSTER_DOMAIN,
    CLUSTER_NAME,
    COREDNS_READY_PORT,
    HOST_GATEWAY,
)


def corefile(kubeconfig_file: Path) -> str:
    """CoreDNS on the bridge address: cluster names only, nothing forwarded outside."""
    return f"""# Rendered by `mpp cluster up`. Pods resolve Services; other names are NXDOMAIN.
{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {HOST_GATEWAY}
    errors
    ready 127.0.0.1:{COREDNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig_file} {CLUSTER_NAME}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
.:53 {{
    bind {HOST_GATEWAY}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def bootstrap_manifests() -> str:
    """Objects `up` applies: CoreDNS's read access, and kube-dns pointing at the host."""
    documents: list[dict[str, object]] = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "mpp:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "mpp:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "mpp:coredns",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mpp:coredns"}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            },
            "spec": {
                "clusterIP": CLUSTER_DNS,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-host",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "mpp-cluster",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [HOST_GATEWAY], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}, indent=2) + "\n"
