"""The test bed is a real control plane: scheduling, controllers, CRDs, RBAC and EndpointSlices."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from support.waiting import wait_until
from testbed import cluster, versions

pytestmark = pytest.mark.testbed

POD_NET = ipaddress.ip_network(cluster.POD_CIDR)



def eventually(check: Callable[[], object], timeout: float = 60, what: str = "") -> object:
    return wait_until(check, timeout, what or "condition", interval=0.5)


def kget(kube, *args: str) -> dict:
    return json.loads(kube.kubectl("get", *args, "-o", "json").stdout)


def deployment(name: str, replicas: int) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                "name": "main", "image": "example.invalid/app:1",
                "ports": [{"containerPort": 2525, "name": "smtp"}]}]}},
        },
    })


def test_kubectl_sees_ready_fake_nodes_and_the_pinned_version(kube):
    nodes = kget(kube, "nodes")["items"]
    assert len(nodes) >= 1
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
    if kube.testbed is not None:
        version = json.loads(kube.kubectl("version", "-o", "json").stdout)
        assert version["serverVersion"]["gitVersion"] == versions.kube_version()
        assert version["clientVersion"]["gitVersion"] == versions.kube_version()


def test_deployment_pods_run_ready_on_loopback_ips_and_are_garbage_collected(kube, namespace):
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=deployment("web", 2))

    def ready_pods() -> list[dict]:
        pods = kget(kube, "pods", "-n", namespace, "-l", "app=web")["items"]
        ready = [p for p in pods if p["status"].get("phase") == "Running"
                 and any(c["type"] == "Ready" and c["status"] == "True"
                         for c in p["status"].get("conditions", []))]
        return ready if len(ready) == 2 else []

    pods = eventually(ready_pods, what="2 pods Running and Ready")
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith("kwok-node-")
        assert ipaddress.ip_address(pod["status"]["podIP"]) in POD_NET
    assert len({p["status"]["podIP"] for p in pods}) == 2
    assert len(kget(kube, "replicasets", "-n", namespace, "-l", "app=web")["items"]) == 1

    kube.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")
    eventually(lambda: not kget(kube, "replicasets", "-n", namespace, "-l", "app=web")["items"],
               what="ReplicaSet garbage-collected")
    eventually(lambda: not kget(kube, "pods", "-n", namespace, "-l", "app=web")["items"],
               what="pods garbage-collected")


def test_service_gets_endpointslices_with_the_pod_ips(kube, namespace):
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=deployment("mta", 2))
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "mta"},
        "spec": {"clusterIP": "None", "selector": {"app": "mta"},
                 "ports": [{"name": "smtp", "port": 25, "targetPort": "smtp"}]},
    }))

    def slice_ips() -> set[str]:
        slices = kget(kube, "endpointslices", "-n", namespace,
                      "-l", "kubernetes.io/service-name=mta")["items"]
        return {addr for s in slices for ep in (s.get("endpoints") or [])
                if ep.get("conditions", {}).get("ready") for addr in ep["addresses"]}

    def pod_ips() -> set[str]:
        pods = kget(kube, "pods", "-n", namespace, "-l", "app=mta")["items"]
        return {p["status"].get("podIP") for p in pods if p["status"].get("podIP")}

    eventually(lambda: len(pod_ips()) == 2 and slice_ips() == pod_ips(),
               what="EndpointSlices list both pod IPs")
    assert all(ipaddress.ip_address(ip) in POD_NET for ip in slice_ips())
    if kube.testbed is not None:  # cluster DNS of the test bed answers with the Ready pods
        name = f"mta.{namespace}.svc.{cluster.CLUSTER_DOMAIN}"
        eventually(lambda: set(cluster.resolve(kube.testbed, name)) == pod_ips(),
                   what="headless Service name resolves to both pod IPs")


def test_a_real_process_listens_and_is_reached_at_a_pod_ip(kube, namespace, pod_network):
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=deployment("echo", 1))
    pod_ip = eventually(lambda: next((p["status"].get("podIP") for p in kget(
        kube, "pods", "-n", namespace, "-l", "app=echo")["items"]), None), what="a pod IP")
    with socket.create_server((pod_ip, 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection((pod_ip, port), timeout=5) as client:
            conn, (peer_ip, _) = server.accept()
            with conn:
                client.sendall(b"EHLO")
                assert conn.recv(4) == b"EHLO"
            assert peer_ip == pod_ip  # source address selection stays on the pod network


SAMPLE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.testbed.example.com"},
    "spec": {
        "group": "testbed.example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "size": {"type": "integer", "minimum": 1}}},
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
            }}},
        }],
    },
}


def test_custom_resources_are_served_with_status_and_validation(kube, namespace):
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(SAMPLE_CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/widgets.testbed.example.com",
                 "--timeout=30s")
    widget = {"apiVersion": "testbed.example.com/v1", "kind": "Widget",
              "metadata": {"name": "w1"}, "spec": {"size": 3}}
    eventually(lambda: kube.kubectl("apply", "-n", namespace, "-f", "-",
                                    stdin=json.dumps(widget), check=False).returncode == 0,
               timeout=30, what="Widget accepted once discovery caught up")
    kube.kubectl("patch", "widget", "w1", "-n", namespace, "--type=merge",
                 "-p", '{"spec":{"size":5}}')
    kube.kubectl("patch", "widget", "w1", "-n", namespace, "--subresource=status",
                 "--type=merge", "-p", '{"status":{"phase":"Ready"},"spec":{"size":99}}')
    got = kget(kube, "widget", "w1", "-n", namespace)
    assert got["spec"]["size"] == 5  # the status subresource ignores spec changes
    assert got["status"]["phase"] == "Ready"

    bad = {**widget, "metadata": {"name": "w2"}, "spec": {"size": 0}}
    out = kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert "spec.size" in out.stderr


def test_rbac_denies_a_service_account_without_rights(kube, namespace):
    kube.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kube.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    config = json.loads(kube.kubectl("config", "view", "--raw", "-o", "json").stdout)
    cluster_cfg = config["clusters"][0]["cluster"]
    ctx = ssl.create_default_context(cafile=cluster_cfg.get("certificate-authority"))
    req = urllib.request.Request(  # noqa: S310 (https to the test bed)
        f"{cluster_cfg['server']}/api/v1/namespaces/{namespace}/secrets",
        headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(req, context=ctx, timeout=10)  # noqa: S310
    assert denied.value.code == 403
    can = kube.kubectl("auth", "can-i", "list", "secrets", "-n", namespace,
                       f"--as=system:serviceaccount:{namespace}:nobody", check=False)
    assert can.stdout.strip() == "no"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(os.environ.get("MTA_USE_EXISTING_CLUSTER"), reason="starts its own test bed")
def test_up_then_down_leaves_no_process_and_no_port(kube, tmp_path):
    tb = cluster.up(tmp_path / "second", die_with_parent=True)
    pids, ports = dict(tb.pids), dict(tb.ports)
    assert all(_alive(pid) for pid in pids.values())
    assert _listening(ports["apiserver"])
    cluster.down(tb.dir)
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert not [name for name, port in ports.items() if _listening(port)]


@pytest.mark.skipif(os.environ.get("MTA_USE_EXISTING_CLUSTER"), reason="starts its own test bed")
def test_a_failed_start_names_the_component_and_its_log_and_leaves_nothing(kube, tmp_path,
                                                                          monkeypatch):
    real = versions.binary
    monkeypatch.setattr(cluster, "binary",
                        lambda name: real("kubectl") if name == "kube-apiserver" else real(name))
    with pytest.raises(cluster.StartError) as failed:
        cluster.up(tmp_path / "broken", die_with_parent=True)
    message = str(failed.value)
    assert "kube-apiserver" in message
    assert str(tmp_path / "broken" / "logs" / "kube-apiserver.log") in message
    assert not (tmp_path / "broken" / cluster.STATE_FILE).exists()
    assert _processes_mentioning(str(tmp_path / "broken")) == []


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found
