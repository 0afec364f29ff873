"""The pod runner executes runnable pods for real: volumes, env, probes, status, termination."""

from __future__ import annotations

import base64
import ipaddress
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_testbed import eventually, kget
from testbed import cluster, podrunner

pytestmark = pytest.mark.testbed


def secret(data: dict[str, str]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "www"},
                       "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


WEB = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
            "containers": [{
                "name": "web", "image": "example.invalid/web:1",
                "command": ["python3"],
                "args": ["-m", "http.server", "8080", "--bind", "$(POD_IP)", "--directory", "/srv/www"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1,
                                   "failureThreshold": 1},
                # exec probes run inside the container's mount namespace: /srv/www is its volume
                "startupProbe": {"exec": {"command": ["test", "-e", "/srv/www/hello"]},
                                 "periodSeconds": 1},
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "www", "mountPath": "/srv/www", "readOnly": True},
                                 {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "www", "secret": {"secretName": "www"}},
                        {"name": "tmp", "emptyDir": {}}],
        }}},
}


SERVICE = json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                      "spec": {"clusterIP": "None", "selector": {"app": "web"},
                               "ports": [{"name": "http", "port": 8080}]}})


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (pod IP on the test host)
        return resp.read().decode()


def _pod(kube, namespace: str) -> dict | None:
    pods = kget(kube, "pods", "-n", namespace, "-l", "app=web")["items"]
    return pods[0] if pods else None


def _ready(pod: dict | None) -> bool:
    return bool(pod) and any(c["type"] == "Ready" and c["status"] == "True"
                             for c in pod["status"].get("conditions", []))


def _process_of(pod_ip: str) -> Path | None:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"http.server" in argv and pod_ip.encode() in argv:
            return cmdline.parent
    return None


def test_runner_runs_the_container_probes_it_and_follows_the_secret(kube, namespace, pod_network):
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=secret({"ready": "yes", "hello": "v1"}))
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(WEB))
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=SERVICE)
    pod = eventually(lambda: (p := _pod(kube, namespace)) and _ready(p) and p, timeout=60,
                     what="pod Ready after its readiness probe passed")
    ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(pod_network)
    assert _get(f"http://{ip}:8080/hello") == "v1"  # the Secret, mounted at its mountPath
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"]
    assert "running" in status["state"]

    proc = _process_of(ip)
    assert proc is not None
    fields = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines())
    assert int(fields["CapEff"].strip(), 16) == 0  # every capability dropped
    assert fields["NoNewPrivs"].strip() == "1"
    mounts = (proc / "mounts").read_text().splitlines()
    root = next(m.split() for m in mounts if m.split()[1] == "/")
    assert "ro" in root[3].split(",")  # readOnlyRootFilesystem

    slices = lambda: {a for s in kget(kube, "endpointslices", "-n", namespace)["items"]  # noqa: E731
                      for ep in s.get("endpoints") or [] if ep["conditions"].get("ready")
                      for a in ep["addresses"]}
    eventually(lambda: slices() == {ip}, what="the Ready pod in the EndpointSlice")

    # kubelet-style refresh: the new Secret content appears through an atomic swap; losing the
    # `ready` file fails the readiness probe, and the pod leaves the endpoints.
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=secret({"hello": "v2"}))
    eventually(lambda: _get(f"http://{ip}:8080/hello") == "v2",
               timeout=podrunner.VOLUME_SYNC + 15, what="updated Secret content")
    eventually(lambda: not _ready(_pod(kube, namespace)), what="pod not Ready")
    eventually(lambda: slices() == set(), what="unready pod out of the EndpointSlice")

    kube.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")
    eventually(lambda: _pod(kube, namespace) is None, what="pod deleted after its process stopped")
    assert _process_of(ip) is None
    with pytest.raises(urllib.error.URLError):
        _get(f"http://{ip}:8080/hello")


def test_cluster_dns_follows_readiness(kube, namespace, pod_network):
    if kube.testbed is None:
        pytest.skip("needs the test bed's own cluster DNS")
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=secret({"ready": "yes", "hello": "v1"}))
    web = json.loads(json.dumps(WEB))
    web["spec"]["replicas"] = 2
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(web))
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=SERVICE)
    name = f"web.{namespace}.svc.{cluster.CLUSTER_DOMAIN}"
    ips = eventually(lambda: (r := cluster.resolve(kube.testbed, name)) and len(r) == 2 and r,
                     what="two Ready pods behind the name")
    for ip in ips:
        assert _get(f"http://{ip}:8080/ready") == "yes"
    started = time.monotonic()
    kube.kubectl("scale", "deployment", "web", "-n", namespace, "--replicas=1")
    eventually(lambda: len(cluster.resolve(kube.testbed, name)) == 1, what="one answer after scale")
    assert time.monotonic() - started < 60
