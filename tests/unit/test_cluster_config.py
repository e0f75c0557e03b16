"""The local cluster's pure parts: rendered configs, the image writer, Kafka's listener for
pods, the forwarder (on loopback addresses), and which ports it forwards."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import socket
import tarfile
import threading
from pathlib import Path

from mpp.config import Settings
from mpp.stack import cluster_config as cc
from mpp.stack.cluster import Cluster, kubeconfig_path
from mpp.stack.cluster_dns import bootstrap_manifests, corefile
from mpp.stack.cluster_forwarder import serve
from mpp.stack.cluster_image import image_tar
from mpp.stack.cluster_pki import Cert, certificates, extensions
from mpp.stack.kafka import with_cluster_listener

TEMPLATE = Path(__file__).parents[2] / "stack" / "kafka" / "server.properties.template"


def test_containerd_config_has_our_socket_sandbox_image_and_oom_rule() -> None:
    text = cc.containerd_config(
        Path("/c/root"), Path("/run/x"), Path("/run/x/s.sock"), Path("/n"), Path("/b"), "native"
    )
    assert 'root = "/c/root"' in text and 'address = "/run/x/s.sock"' in text
    assert "restrict_oom_score_adj = true" in text
    assert f'sandbox_image = "{cc.PAUSE_IMAGE}"' in text
    assert 'snapshotter = "native"' in text
    assert 'conf_dir = "/n"' in text and 'bin_dir = "/b"' in text
    assert "SystemdCgroup = false" in text


def test_cni_config_is_a_gateway_bridge_on_the_pod_cidr() -> None:
    network = json.loads(cc.cni_config(Path("/state/ipam")))
    bridge = network["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "mpp0" and bridge["isGateway"]
    assert bridge["ipam"]["dataDir"] == "/state/ipam"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24", "gateway": "10.244.0.1"}]]


def test_nft_rules_keep_pods_inside() -> None:
    rules = cc.nft_ruleset()
    assert rules.startswith("table inet mpp_cluster {")
    assert "ip saddr 10.244.0.0/24 ip daddr != { 10.244.0.0/24, 10.96.0.0/24 } drop" in rules
    assert 'iifname "mpp0" oifname != "mpp0" drop' in rules
    assert "hook forward" in rules and "hook input" in rules


def test_kubelet_config_fits_cgroup_v1_and_keeps_most_of_the_node() -> None:
    pki = cc.Pki(Path("/pki"))
    config = json.loads(cc.kubelet_config(pki, Path("/run/x/s.sock")))
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["containerRuntimeEndpoint"] == "unix:///run/x/s.sock"
    assert config["clusterDNS"] == ["10.96.0.10"] and config["clusterDomain"] == "cluster.local"
    assert config["systemReserved"]["cpu"] == "100m"
    assert config["authentication"]["anonymous"]["enabled"] is False
    # Imported images cannot be pulled again: the kubelet never garbage-collects them, and a
    # busy disk does not evict pods while a gigabyte is left.
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["evictionHard"]["imagefs.available"] == "1Gi"


def test_apiserver_flags() -> None:
    args = cc.apiserver_args(cc.Pki(Path("/pki")))
    assert "--kubelet-preferred-address-types=InternalIP,Hostname" in args
    assert "--service-cluster-ip-range=10.96.0.0/24" in args
    assert "--advertise-address=10.244.0.1" in args
    assert "--enable-admission-plugins=NodeRestriction" in args


def test_kubeconfig_is_marked_and_embeds_credentials() -> None:
    text = cc.kubeconfig("https://10.244.0.1:6443", "CA", "CERT", "KEY", "admin")
    first, _, rest = text.partition("\n")
    assert first == cc.KUBECONFIG_MARK and first.startswith("#")
    document = json.loads(rest)
    assert document["current-context"] == "mpp-local"
    assert document["clusters"][0]["cluster"]["server"] == "https://10.244.0.1:6443"
    assert document["users"][0]["user"]["client-key-data"] == "S0VZ"  # base64 of KEY


def test_dns_serves_cluster_names_only_behind_a_selectorless_service() -> None:
    text = corefile(Path("/k"))
    assert "bind 10.244.0.1" in text and "kubeconfig /k mpp-local" in text
    assert "forward" not in text and "rcode NXDOMAIN" in text
    items = json.loads(bootstrap_manifests())["items"]
    service = next(i for i in items if i["kind"] == "Service")
    assert service["spec"]["clusterIP"] == "10.96.0.10" and "selector" not in service["spec"]
    slice_ = next(i for i in items if i["kind"] == "EndpointSlice")
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    assert slice_["endpoints"][0]["addresses"] == ["10.244.0.1"]


def test_certificates_name_nodes_and_sans() -> None:
    by_name = {c.name: c for c in certificates("vm")}
    assert by_name["kubelet-client"].subject == "/O=system:nodes/CN=system:node:vm"
    assert "IP:10.96.0.1" in by_name["apiserver"].sans
    assert "serverAuth" in extensions(by_name["apiserver"])
    assert "subjectAltName" not in extensions(Cert("x", "/CN=x"))


def test_image_tar_is_a_docker_archive_ctr_can_import() -> None:
    data = image_tar("localhost/mpp/t:1", {"/bin/prog": (b"#!binary", 0o755)}, ["/bin/prog"])
    assert data == image_tar(
        "localhost/mpp/t:1", {"/bin/prog": (b"#!binary", 0o755)}, ["/bin/prog"]
    )
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (entry,) = manifest
        assert entry["RepoTags"] == ["localhost/mpp/t:1"]
        config = json.loads(tar.extractfile(entry["Config"]).read())  # type: ignore[union-attr]
        layer = tar.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    assert config["config"]["Entrypoint"] == ["/bin/prog"]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        member = inner.getmember("bin/prog")
        assert member.mode == 0o755
        assert inner.extractfile(member).read() == b"#!binary"  # type: ignore[union-attr]


def test_kafka_gets_a_cluster_listener_advertised_on_the_gateway() -> None:
    rendered = TEMPLATE.read_text().replace("@PORT@", "19092").replace("@CONTROLLER_PORT@", "19093")
    once = with_cluster_listener(rendered, "127.0.0.1")
    props = dict(
        line.split("=", 1) for line in once.splitlines() if "=" in line and not line.startswith("#")
    )
    assert props["listeners"].endswith(",CLUSTER://127.0.0.1:19094")
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:19092,CLUSTER://10.244.0.1:19094"
    )
    assert props["listener.security.protocol.map"].endswith(",CLUSTER:PLAINTEXT")
    assert with_cluster_listener(once, "127.0.0.1") == once


def test_forwarded_ports_cover_the_local_stack_and_kafkas_cluster_listener() -> None:
    cluster = Cluster(Settings())
    assert cluster.forwarded_ports() == [15432, 16379, 17687, 19050, 19092, 19094, 19530]
    assert kubeconfig_path(Settings()).parts[-2:] == ("cluster", "kubeconfig")


def test_forwarder_copies_bytes_both_ways() -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    port = upstream.getsockname()[1]

    def echo() -> None:
        conn, _ = upstream.accept()
        with conn:
            conn.sendall(b"got " + conn.recv(100))

    threading.Thread(target=echo, daemon=True).start()
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve("127.0.0.2", "127.0.0.1", [port]))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    try:
        for _ in range(50):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.2", port), 1) as c,
            ):
                c.sendall(b"ping")
                assert c.recv(100) == b"got ping"
                break
            threading.Event().wait(0.05)
        else:
            raise AssertionError("the forwarder never listened")
    finally:
        loop.call_soon_threadsafe(task.cancel)
        upstream.close()


def test_every_component_listens_where_its_port_check_looks() -> None:
    from mpp.stack.cluster import PORTS

    components = {c.name: c for c in Cluster(Settings()).components()}
    assert set(components) == {
        "containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
        "kubelet", "kube-proxy", "coredns", "forwarder",
    }  # fmt: skip
    assert set(PORTS) <= set(components)
    assert components["kube-apiserver"].ports == ((cc.HOST_GATEWAY, cc.APISERVER_PORT),)
    assert "--node-ip=10.244.0.1" in components["kubelet"].argv
    assert components["forwarder"].argv[-1] == "15432,16379,17687,19050,19092,19094,19530"


def test_apiserver_serves_the_aggregation_layer_with_a_front_proxy_cert() -> None:
    args = cc.apiserver_args(cc.Pki(Path("/pki")))
    assert "--proxy-client-cert-file=/pki/front-proxy-client.crt" in args
    assert "front-proxy-client" in {c.name for c in certificates("vm")}
