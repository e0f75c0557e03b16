"""The local cluster's fixed addresses and the text of every configuration file it writes.

Pure functions (no I/O): each takes the paths it needs and returns a file's content, so the
unit tests check what the components are given. mpp.stack.cluster writes and runs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# -- fixed addresses (other components rely on them) ---------------------------------------
BRIDGE = "mpp0"
POD_CIDR = "10.244.0.0/24"
HOST_GATEWAY = "10.244.0.1"  # the host as pods see it: the bridge's address
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_NAME = "mpp-local"  # the kubeconfig's cluster and context name; marks files we wrote
APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 12379
ETCD_PEER_PORT = 12380
KUBELET_HEALTHZ_PORT = 10248
KUBE_PROXY_HEALTHZ_PORT = 10256
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259
COREDNS_READY_PORT = 19181
PAUSE_IMAGE = "localhost/mpp/pause:3.10"
NFT_TABLE = "mpp_cluster"  # family inet
# Kafka's listener for pods: bound on loopback, advertised as HOST_GATEWAY:this port.
KAFKA_CLUSTER_PORT = 19094
KUBECONFIG_MARK = "# written by `mpp cluster up` (context mpp-local); it may rewrite this file"


def apiserver_url() -> str:
    return f"https://{HOST_GATEWAY}:{APISERVER_PORT}"


# -- containerd ----------------------------------------------------------------------------


def containerd_config(
    root: Path, state: Path, socket: Path, cni_conf_dir: Path, cni_bin_dir: Path, snapshotter: str
) -> str:
    """containerd 1.6's config (version 2) with its own root, state dir and socket."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""# Rendered by `mpp cluster up` on every start.
version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # The sandbox lacks CAP_SYS_RESOURCE: never lower a container's oom_score_adj below ours.
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "{snapshotter}"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{cni_bin_dir}"
  conf_dir = "{cni_conf_dir}"
  max_conf_num = 1
"""


def cni_config(ipam_dir: Path) -> str:
    """The pod network: the bridge plugin on mpp0 with host-local addresses from POD_CIDR."""
    network = {
        "cniVersion": "1.0.0",
        "name": "mpp",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # Pods never leave the machine (the nft table drops it), so no masquerade.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": HOST_GATEWAY}]],
                    "routes": [{"dst": SERVICE_CIDR}, {"dst": POD_CIDR}, {"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(network, indent=2) + "\n"


# -- network rules -------------------------------------------------------------------------


def nft_ruleset() -> str:
    """Our own inet table: pods reach pods, Services and the host's bridge address only.

    Forwarded traffic from the pod network to anything else is dropped (the bridge plugin
    turns ip_forward on), and so is traffic from pods to the host's other addresses. Nothing
    touches the host's own traffic, so its registry access is unchanged.
    """
    allowed = f"{{ {POD_CIDR}, {SERVICE_CIDR} }}"
    return f"""table inet {NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    ip saddr {POD_CIDR} ip daddr != {allowed} drop
    iifname "{BRIDGE}" oifname != "{BRIDGE}" drop
    iifname "{BRIDGE}" meta nfproto ipv6 drop
  }}
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "{BRIDGE}" ip daddr != {{ {POD_CIDR}, 255.255.255.255 }} drop
    iifname "{BRIDGE}" meta nfproto ipv6 drop
  }}
}}
"""


# -- Kubernetes components -----------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Where the certificates and keys live (mpp.stack.cluster_pki makes them)."""

    dir: Path

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.crt("ca")


def kubeconfig(server: str, ca_pem: str, cert_pem: str, key_pem: str, user: str) -> str:
    """A kubeconfig with everything embedded (base64), one context named CLUSTER_NAME."""
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    # JSON is YAML: no YAML library needed, and the mark is a YAML comment.
    return KUBECONFIG_MARK + "\n" + json.dumps(document, indent=2) + "\n"


def etcd_args(data_dir: Path) -> list[str]:
    client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    return [
        "--name=mpp",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=mpp={peer}",
        "--initial-cluster-state=new",
        "--quota-backend-bytes=1073741824",
        "--log-level=warn",
    ]


def apiserver_args(pki: Pki) -> list[str]:
    return [
        f"--advertise-address={HOST_GATEWAY}",
        f"--bind-address={HOST_GATEWAY}",
        f"--secure-port={APISERVER_PORT}",
        f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        # PodSecurity is on by default; NodeRestriction keeps the kubelet to its own node.
        "--enable-admission-plugins=NodeRestriction",
        f"--client-ca-file={pki.ca}",
        f"--tls-cert-file={pki.crt('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
        f"--kubelet-certificate-authority={pki.ca}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
        f"--service-account-key-file={pki.dir / 'sa.pub'}",
        f"--service-account-signing-key-file={pki.dir / 'sa.key'}",
        # The aggregation layer's front proxy (and what controllers read to trust it).
        f"--requestheader-client-ca-file={pki.ca}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.crt('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key('front-proxy-client')}",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_args(pki: Pki, kubeconfig_file: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig_file}",
        f"--authentication-kubeconfig={kubeconfig_file}",
        f"--authorization-kubeconfig={kubeconfig_file}",
        "--bind-address=127.0.0.1",
        f"--secure-port={CONTROLLER_MANAGER_PORT}",
        "--leader-elect=false",
        "--cluster-name=mpp",
        "--allocate-node-cidrs=false",
        f"--cluster-signing-cert-file={pki.ca}",
        f"--cluster-signing-key-file={pki.key('ca')}",
        f"--root-ca-file={pki.ca}",
        f"--service-account-private-key-file={pki.dir / 'sa.key'}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_args(kubeconfig_file: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig_file}",
        f"--authentication-kubeconfig={kubeconfig_file}",
        f"--authorization-kubeconfig={kubeconfig_file}",
        "--bind-address=127.0.0.1",
        f"--secure-port={SCHEDULER_PORT}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def kubelet_config(pki: Pki, socket: Path) -> str:
    """KubeletConfiguration (JSON is YAML): cgroup v1 with cgroupfs, the whole 2-core box."""
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "address": HOST_GATEWAY,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "tlsCertFile": str(pki.crt("kubelet")),
        "tlsPrivateKeyFile": str(pki.key("kubelet")),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        # A little for the control plane beside the pods; allocatable stays ~1.9 CPUs.
        "systemReserved": {"cpu": "100m", "memory": "256Mi"},
        "enforceNodeAllocatable": ["pods"],
        # Absolute floors, not percentages: on a large, busy disk (image builds beside the
        # cluster) 5% is gigabytes that the builds may legitimately use.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1Gi",
            "imagefs.available": "1Gi",
            "nodefs.inodesFree": "5%",
        },
        # No image garbage collection: every image here was imported (`mpp images build
        # --import`, the pause image) and cannot be pulled again; a full disk during a build
        # made the kubelet delete them. Old builds are pruned by the importer instead.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 110,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        "kernelMemcgNotification": False,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": True,
    }
    return json.dumps(document, indent=2) + "\n"


def kubelet_args(
    config_file: Path, kubeconfig_file: Path, root_dir: Path, node_name: str
) -> list[str]:
    return [
        f"--config={config_file}",
        f"--kubeconfig={kubeconfig_file}",
        f"--root-dir={root_dir}",
        f"--hostname-override={node_name}",
        f"--node-ip={HOST_GATEWAY}",
        "--v=1",
    ]


def kube_proxy_config(kubeconfig_file: Path) -> str:
    document = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "clientConnection": {"kubeconfig": str(kubeconfig_file)},
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        # Leave the host's conntrack sysctls alone (the sandbox may refuse writes to them).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        # No NodePorts on 127.0.0.1, so kube-proxy leaves route_localnet off.
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "nodePortAddresses": [f"{HOST_GATEWAY}/32"],
    }
    return json.dumps(document, indent=2) + "\n"
