"""Persistent volumes on the test bed: the default StorageClass provisions, the pod runner mounts claims,
and a StatefulSet's pod keeps its volume across deletion, node drain and node crash."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_testbed import eventually, kget
from testbed import nodes, storage

pytestmark = pytest.mark.testbed

SPOOL = "/var/spool/mta"
# Notes each start and each SIGTERM in a file on its volume and serves that file on its pod IP.
SCRIPT = f"""
import http.server, os, signal, sys
LOG = "{SPOOL}/log"
def note(line):
    with open(LOG, "a") as f:
        f.write(line + "\\n")
        f.flush()
        os.fsync(f.fileno())
def term(*_):
    note("sigterm " + os.environ["POD_NAME"])
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
note("start " + os.environ["POD_NAME"] + " " + os.environ["NODE_NAME"])
class Log(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open(LOG, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((os.environ["POD_IP"], 8080), Log).serve_forever()
"""


def pod_spec(volumes: list[dict]) -> dict:
    """The spool volume mounted at SPOOL; volumes: [] when a volumeClaimTemplate supplies it."""
    env = [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
           for name, path in (("POD_NAME", "metadata.name"), ("NODE_NAME", "spec.nodeName"),
                              ("POD_IP", "status.podIP"))]
    return {
        "terminationGracePeriodSeconds": 10,
        "containers": [{
            "name": "main", "image": "example.invalid/spool:1", "command": ["python3"],
            "args": ["-c", SCRIPT], "env": env, "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            "volumeMounts": [{"name": "spool", "mountPath": SPOOL}],
        }],
        "volumes": volumes,
    }


def statefulset(name: str, replicas: int) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {
            "serviceName": name, "replicas": replicas, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec([])},
            "volumeClaimTemplates": [{"metadata": {"name": "spool"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}],
        },
    })


def headless(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                       "spec": {"clusterIP": "None", "selector": {"app": name},
                                "ports": [{"name": "http", "port": 8080}]}})


def pod(kube, namespace: str, name: str) -> dict | None:
    out = kube.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def ready(p: dict | None) -> bool:
    return bool(p) and not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))


def served_log(p: dict) -> list[str]:
    url = f"http://{p['status']['podIP']}:8080/"
    with urllib.request.urlopen(url, timeout=2) as resp:  # a pod IP on the test host
        return resp.read().decode().splitlines()


def unreachable(p: dict) -> bool:
    try:
        served_log(p)
    except (urllib.error.URLError, OSError):
        return True
    return False


def ready_pod(kube, namespace: str, name: str, what: str, not_uid: str = "") -> dict:
    return eventually(lambda: (p := pod(kube, namespace, name)) and ready(p)
                      and p["metadata"]["uid"] != not_uid and p, timeout=90, what=what)


def start_statefulset(kube, namespace: str, replicas: int) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=headless("spool"))
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=statefulset("spool", replicas))


def test_default_storage_class_is_the_hostpath_provisioner(kube):
    classes = kget(kube, "storageclasses")["items"]
    default = [c for c in classes
               if c["metadata"].get("annotations", {}).get(
                   "storageclass.kubernetes.io/is-default-class") == "true"]
    assert [c["metadata"]["name"] for c in default] == [storage.STORAGE_CLASS]
    assert default[0]["provisioner"] == storage.PROVISIONER


def test_a_pod_waits_for_its_claim_and_mounts_it_once_bound(kube, namespace, pod_network, tmp_path):
    # A claim of a class nobody serves stays Pending, and the runner does not start the pod.
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "held"},
             "spec": {"storageClassName": "no-such-class", "accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "64Mi"}}}}
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(claim))
    spec = pod_spec([{"name": "spool", "persistentVolumeClaim": {"claimName": "held"}}])
    spec["nodeName"] = "kwok-node-0"  # past the scheduler, which would hold a pod with an unbound claim
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "held"}, "spec": spec}))

    def waiting_message() -> str:
        p = pod(kube, namespace, "held") or {}
        states = [s["state"] for s in p.get("status", {}).get("containerStatuses") or []]
        return next((s["waiting"].get("message", "") for s in states if "waiting" in s), "")

    message = eventually(waiting_message, what="the container waiting, with the reason")
    assert 'persistentvolumeclaim "held" is not bound' in message
    events = kget(kube, "events", "-n", namespace, "--field-selector", "involvedObject.name=held")
    assert any(e["reason"] == "FailedMount" and e["type"] == "Warning" for e in events["items"])
    p = pod(kube, namespace, "held")
    assert p["status"]["phase"] == "Pending"
    assert kget(kube, "pvc", "held", "-n", namespace)["status"]["phase"] == "Pending"

    # A hostPath PV of that class, made by hand, binds it; the pod starts on that directory.
    volume = tmp_path / "held"
    volume.mkdir()
    pv_name = f"held-{namespace}"
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
          "spec": {"storageClassName": "no-such-class", "capacity": {"storage": "64Mi"},
                   "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                   "claimRef": {"namespace": namespace, "name": "held"},
                   "hostPath": {"path": str(volume), "type": "Directory"}}}
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(pv))
    try:
        p = ready_pod(kube, namespace, "held", "the pod Ready once its claim is bound")
        assert served_log(p) == ["start held kwok-node-0"]
        assert (volume / "log").read_text() == "start held kwok-node-0\n"  # the very directory
    finally:
        kube.kubectl("delete", "pod", "held", "-n", namespace, "--wait=true", check=False)
        kube.kubectl("delete", "pv", pv_name, "--wait=false", check=False)


def test_statefulset_pods_keep_their_claim_across_deletion(kube, namespace, pod_network):
    start_statefulset(kube, namespace, replicas=2)
    first = {name: ready_pod(kube, namespace, name, f"{name} Ready") for name in ("spool-0", "spool-1")}
    for name, p in first.items():
        assert served_log(p) == [f"start {name} {p['spec']['nodeName']}"]
        claim = kget(kube, "pvc", f"spool-{name}", "-n", namespace)
        assert claim["status"]["phase"] == "Bound"
        assert claim["spec"]["storageClassName"] == storage.STORAGE_CLASS
        if kube.testbed is not None:  # the bytes are in the test bed's state directory
            pv = kget(kube, "pv", claim["spec"]["volumeName"])
            assert (storage.volume_dir(kube.testbed.dir, pv["spec"]["hostPath"]["path"]) / "log").is_file()
    assert {p["status"]["podIP"] for p in first.values()} == set(
        a for s in kget(kube, "endpointslices", "-n", namespace)["items"]
        for ep in s.get("endpoints") or [] if ep["conditions"].get("ready") for a in ep["addresses"])

    old = first["spool-0"]
    kube.kubectl("delete", "pod", "spool-0", "-n", namespace)
    new = ready_pod(kube, namespace, "spool-0", "spool-0 back", not_uid=old["metadata"]["uid"])
    assert served_log(new) == [f"start spool-0 {old['spec']['nodeName']}", "sigterm spool-0",
                               f"start spool-0 {new['spec']['nodeName']}"]
    assert served_log(first["spool-1"]) == [f"start spool-1 {first['spool-1']['spec']['nodeName']}"]


def pdb(namespace: str, max_unavailable: int) -> str:
    return json.dumps({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                       "metadata": {"name": "spool", "namespace": namespace},
                       "spec": {"maxUnavailable": max_unavailable,
                                "selector": {"matchLabels": {"app": "spool"}}}})


def test_drain_evicts_through_the_pdb_and_the_pod_moves_with_its_volume(kube, namespace, pod_network):
    start_statefulset(kube, namespace, replicas=1)
    kube.kubectl("apply", "-f", "-", stdin=pdb(namespace, 0))
    old = ready_pod(kube, namespace, "spool-0", "spool-0 Ready")
    node = old["spec"]["nodeName"]
    eventually(lambda: kget(kube, "pdb", "spool", "-n", namespace).get("status", {}).get(
        "observedGeneration"), what="the PDB observed")
    try:
        with pytest.raises(subprocess.CalledProcessError) as refused:
            nodes.drain(kube, node, timeout=10)
        assert "disruption budget" in refused.value.stderr
        assert pod(kube, namespace, "spool-0")["metadata"]["uid"] == old["metadata"]["uid"]
        assert served_log(old) == [f"start spool-0 {node}"]

        kube.kubectl("apply", "-f", "-", stdin=pdb(namespace, 1))
        eventually(lambda: kget(kube, "pdb", "spool", "-n", namespace)["status"].get(
            "disruptionsAllowed") == 1, what="the PDB allowing one disruption")
        nodes.drain(kube, node)
        assert kget(kube, "node", node)["spec"].get("unschedulable") is True
        new = ready_pod(kube, namespace, "spool-0", "spool-0 back", not_uid=old["metadata"]["uid"])
        assert new["spec"]["nodeName"] != node
        assert served_log(new) == [f"start spool-0 {node}", "sigterm spool-0",
                                   f"start spool-0 {new['spec']['nodeName']}"]
    finally:
        nodes.uncordon(kube, node)


def test_crashed_node_non_graceful_shutdown_moves_the_pod_with_its_volume(kube, namespace,
                                                                         pod_network):
    if kube.testbed is None:
        pytest.skip("a node crash is simulated by the test bed's kwok and pod runner")
    start_statefulset(kube, namespace, replicas=1)
    old = ready_pod(kube, namespace, "spool-0", "spool-0 Ready")
    node = old["spec"]["nodeName"]
    try:
        nodes.crash(kube, node)
        eventually(lambda: unreachable(old), what="the pod's process killed with its machine")
        assert pod(kube, namespace, "spool-0")["metadata"]["uid"] == old["metadata"]["uid"]
        nodes.wait_not_ready(kube, node)
        # Still there: without the out-of-service taint nobody may say the pod has stopped.
        assert pod(kube, namespace, "spool-0")["metadata"]["uid"] == old["metadata"]["uid"]
        nodes.shut_down(kube, node)
        new = ready_pod(kube, namespace, "spool-0", "spool-0 recreated on the other node",
                        not_uid=old["metadata"]["uid"])
        assert new["spec"]["nodeName"] != node
        # No SIGTERM: the process died with the machine; the file it had written is there.
        assert served_log(new) == [f"start spool-0 {node}", f"start spool-0 {new['spec']['nodeName']}"]
    finally:
        nodes.recover(kube, node)
    assert nodes.ready(nodes.node(kube, node))


def test_volume_dir_maps_a_provisioned_path_into_the_state_dir(tmp_path: Path):
    assert storage.volume_dir(tmp_path, "/tmp/hostpath_pv/abc") == tmp_path / "volumes" / "abc"


def test_sync_volumes_names_every_claim_not_yet_mountable(tmp_path: Path):
    from testbed import podvolumes

    held = {"spec": {"volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "ca"}},
                                 {"name": "b", "emptyDir": {}},
                                 {"name": "c", "persistentVolumeClaim": {"claimName": "cc"}}]}}

    def unbound(name: str) -> Path:
        raise podvolumes.VolumeError(f'persistentvolumeclaim "{name}" is not bound')

    with pytest.raises(podvolumes.VolumeError) as failed:
        podvolumes.sync_volumes(held, tmp_path / "pod", lambda *_: None, lambda *_: "", unbound)
    assert str(failed.value) == ('unmounted volumes=[a c]: persistentvolumeclaim "ca" is not bound; '
                                 'persistentvolumeclaim "cc" is not bound')
    bound = podvolumes.sync_volumes(held, tmp_path / "pod", lambda *_: None, lambda *_: "",
                                    lambda name: tmp_path / name)
    assert bound == {"a": tmp_path / "ca", "b": tmp_path / "pod" / "b", "c": tmp_path / "cc"}
