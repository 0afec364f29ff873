"""The release from the real image on the test bed: the archive of ``make image`` loaded onto the node
(as ``kind load image-archive`` would) and the Helm chart installed with it (``image.pullPolicy=Never``:
the image must be the node's), so every pod of the release runs from the image, started by the pod
runner with runc (hack/testbed/images.py says why not a kubelet here): the operator's Deployment pod,
which reaches the API server in-cluster with its ServiceAccount's token, reconciles the examples into one
MTA, whose pod runs from the image too; and ``helm test``'s pod, which sends a message to the MTA
Service's address (cluster DNS, the test bed's Service proxy) that the receiving server gets. Each
container runs as UID 10001 on the image's read-only root with no capabilities, a seccomp filter and its
memory limit; killing the relay gets it restarted in the same pod, and the mail queued on its volume
survives."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trustme
from conftest import Chain, _receiver_tls
from durability import QUEUE, SENDER, Smarthost, deliver_all, pod_uids, send_batch, wait_ready
from e2ekit import CLUSTER, CRDS, examples_for_testbed, figure, resolver
from image.build import Image
from mta_operator import naming
from mta_operator.api import KINDS
from support.ports import free_port
from support.smtp_receiver import Transaction
from support.waiting import wait_until
from testbed import images, podrunner, versions

if TYPE_CHECKING:
    from conftest import ReachableCluster

IMAGE = "mta-operator:e2e-image"  # a name of the test's own: the suite's other pods keep the checkout
REPOSITORY, TAG = IMAGE.split(":")
CHART = Path(__file__).resolve().parents[2] / "helm" / "mta-operator"
RELEASE = "mta-image"
OPERATOR = f"{RELEASE}-mta-operator"  # the chart's full name for this release
RECIPIENT = f"helm-test-{uuid.uuid4().hex[:12]}@example.net"  # what `helm test` sends is known by it


def _helm(kube: ReachableCluster, *args: str, check: bool = True, timeout: float = 200
          ) -> subprocess.CompletedProcess[str]:
    helm = versions.binary("helm")
    if not helm.exists():
        reason = f"helm not built at {helm} (run `make testbed-build`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"helm required in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return subprocess.run([str(helm), *args, "--kubeconfig", str(kube.kubeconfig)], capture_output=True,
                          text=True, check=check, timeout=timeout)


def _values(namespace: str) -> list[str]:
    values = {
        "image": {"repository": REPOSITORY, "tag": TAG, "pullPolicy": "Never"},
        "watchNamespaces": [namespace],  # the suite's other namespaces have operators of their own
        "replicas": 1,
        "crds": {"install": False},  # applied beside the suite's other modules, which share them
        "test": {"namespace": namespace, "credential": "billing", "from": SENDER, "to": RECIPIENT,
                 "caSecret": naming.tls(CLUSTER)},
    }
    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def _pod_logs(kube: ReachableCluster, namespace: str, prefix: str, lines: int = 30) -> str:
    """The tail of the logs the pod runner keeps of a pod's containers (there is no kubelet to ask)."""
    tb = Path(kube.testbed.dir)  # type: ignore[union-attr]
    found = sorted([*(tb / "pods").glob(f"{namespace}_{prefix}*/*.log"),
                    *(tb / "logs" / "pods").glob(f"{namespace}_{prefix}*.log")])
    return "\n".join(f"--- {path.name} ---\n" + "\n".join(
        path.read_text(errors="replace").splitlines()[-lines:]) for path in found)


@pytest.fixture(scope="module")
def from_image(kube: ReachableCluster, pod_network: str, oci_image: Image,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, Smarthost]]:
    if kube.testbed is None:
        pytest.skip("needs the test bed's pod runner, not an existing cluster")
    _helm(kube, "version")
    images.load(Path(kube.testbed.dir), oci_image.archive, IMAGE)
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *[f"crd/{kind.crd.name}" for kind in KINDS])
    namespace = f"image-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", namespace)
    ca = trustme.CA()
    trust = Path(kube.testbed.dir) / podrunner.TRUST_DIR / f"{namespace}.pem"
    trust.parent.mkdir(exist_ok=True)
    trust.write_bytes(ca.cert_pem.bytes())
    smarthost = Smarthost(free_port(), _receiver_tls(ca), ca.cert_pem.bytes())
    # No operator of the test's own: the chart's Deployment is the one that reconciles.
    chain = Chain(kube, namespace, None, resolver(kube.testbed.ports["dns"]), None)  # type: ignore[arg-type]
    try:
        started = time.monotonic()
        try:
            _helm(kube, "install", RELEASE, str(CHART), "--namespace", namespace, "--wait", "--timeout",
                  "120s", *_values(namespace))
            installed = time.monotonic()
            docs = examples_for_testbed(namespace, smarthost.port)
            for doc in docs:
                if doc["kind"] == "Cluster":
                    doc["spec"]["queue"].update(QUEUE)
            chain.apply(*docs)
            chain.kubectl("wait", "--for=condition=Ready", "--timeout=180s", f"mtacluster/{CLUSTER}",
                          timeout=190)
            wait_ready(chain, 1)
        except (AssertionError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", "") or ""
            raise AssertionError(f"{error}\n{detail}\n{_pod_logs(kube, namespace, OPERATOR)}") from error
        figure("helm install from the image: operator Ready, s", round(installed - started, 1))
        figure("examples applied -> Cluster Ready, MTA Ready (both from the image), s",
               round(time.monotonic() - installed, 1))
        yield chain, smarthost
    finally:
        smarthost.down()
        _helm(kube, "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s",
              check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        trust.unlink(missing_ok=True)


def _pod(chain: Chain) -> dict:
    return chain.get("pod", naming.pod(CLUSTER, 0))


def _operator_pod(chain: Chain) -> dict:
    (pod,) = [p for p in chain.list("pods") if p["metadata"]["name"].startswith(f"{OPERATOR}-")
              and not p["metadata"].get("deletionTimestamp")]
    return pod


def _exec(chain: Chain, *command: str, pod: dict | None = None, container: str = "relay"
          ) -> subprocess.CompletedProcess[str]:
    """``kubectl exec POD -c CONTAINER -- COMMAND`` (the MTA's relay unless told), through the runtime
    (there is no kubelet to proxy)."""
    argv = images.exec_argv(Path(chain.kube.testbed.dir), pod or _pod(chain), container, list(command))  # type: ignore[union-attr]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _state(chain: Chain, pod: dict | None = None, container: str = "relay") -> dict:
    cid = images.container_id(pod or _pod(chain), container)
    out = subprocess.run(images.runc(Path(chain.kube.testbed.dir), "state", cid),  # type: ignore[union-attr]
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_relay_runs_from_the_image_as_10001_on_a_read_only_root(from_image: tuple[Chain, Smarthost]
                                                                ) -> None:
    chain, _ = from_image
    pod = _pod(chain)
    assert {c["image"] for c in pod["spec"]["containers"]} == {IMAGE}
    assert _state(chain)["status"] == "running"
    assert _exec(chain, "id", "-u").stdout.split() == ["10001"]
    assert "bookworm" in _exec(chain, "cat", "/etc/os-release").stdout  # the image's root, not this host
    assert _exec(chain, "test", "-x", "/opt/mta/bin/mta-relay").returncode == 0
    wrote = _exec(chain, "touch", "/probe")
    assert wrote.returncode != 0
    assert "Read-only file system" in wrote.stderr
    status = dict(line.split(":", 1) for line in _exec(chain, "cat", "/proc/1/status").stdout.splitlines())
    assert int(status["CapEff"].strip(), 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter
    assert _exec(chain, "unshare", "--user", "true").returncode != 0  # denied by it
    limit = next(c for c in pod["spec"]["containers"] if c["name"] == "relay")["resources"]["limits"]
    pid = _state(chain)["pid"]
    memory = next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                  if line.split(":")[1] == "memory")
    applied = int(Path(f"/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes").read_text())
    assert applied == images.resources({"resources": {"limits": limit}})["memory"]["limit"]


def test_killed_container_restarts_and_its_queue_survives(from_image: tuple[Chain, Smarthost]) -> None:
    chain, smarthost = from_image
    started = time.monotonic()
    tokens = send_batch(chain, 5)  # the smarthost is down: queued on the MTA's volume
    uids = pod_uids(chain)
    name = naming.pod(CLUSTER, 0)
    restarts = next(s["restartCount"] for s in _pod(chain)["status"]["containerStatuses"]
                    if s["name"] == "relay")
    before = _state(chain)["pid"]
    subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(before)], check=True)
    wait_ready(chain, 1)

    def restarted() -> bool:
        statuses = _pod(chain)["status"].get("containerStatuses") or []
        return any(s["name"] == "relay" and s["restartCount"] > restarts and s["ready"] for s in statuses)

    deadline = time.monotonic() + 120
    while not restarted():
        assert time.monotonic() < deadline, "the killed relay container was not restarted"
        time.sleep(0.5)
    assert pod_uids(chain) == uids  # the same pod: its container restarted, as kubelet does
    assert _state(chain)["pid"] != before
    assert name in chain.ready_pods()
    tally = deliver_all(smarthost, tokens, "kill -9 of the image's relay container", started)
    assert (tally.lost, tally.duplicated) == (0, 0)


def test_operator_pod_runs_from_the_image_and_leads(from_image: tuple[Chain, Smarthost]) -> None:
    chain, _ = from_image
    pod = _operator_pod(chain)
    (container,) = pod["spec"]["containers"]
    assert (container["image"], container["imagePullPolicy"]) == (IMAGE, "Never")
    assert _state(chain, pod, "operator")["status"] == "running"  # a runc container, not kwok's fake
    run = functools.partial(_exec, chain, pod=pod, container="operator")
    assert run("id", "-u").stdout.split() == ["10001"]
    argv = run("cat", "/proc/1/cmdline").stdout.split("\0")
    assert "/opt/mta/bin/mta-operator" in argv
    assert "run" in argv
    assert "Read-only file system" in run("touch", "/probe").stderr
    # In-cluster config: the ServiceAccount's projected token, its namespace and the cluster CA.
    mounted = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert run("cat", f"{mounted}/namespace").stdout == chain.namespace
    assert run("test", "-s", f"{mounted}/token").returncode == 0
    assert "BEGIN CERTIFICATE" in run("cat", f"{mounted}/ca.crt").stdout
    # It is the leader (the Lease the chart names), so it made the Cluster Ready.
    holder = chain.get("lease", OPERATOR)["spec"]["holderIdentity"]
    assert holder.startswith(f"{pod['metadata']['name']}_")
    # Health and metrics on the pod's IP, where the liveness probe and Prometheus find them.
    ip = pod["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8080/healthz", timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"http://{ip}:8081/metrics", timeout=5) as resp:
        assert "mta_operator_leader 1.0" in resp.read().decode()
    (status,) = _operator_pod(chain)["status"]["containerStatuses"]
    assert status["ready"]
    assert status["restartCount"] == 0  # the liveness probe never failed


def test_helm_test_sends_through_the_mta_service(from_image: tuple[Chain, Smarthost]) -> None:
    chain, smarthost = from_image
    smarthost.up()
    test_pod = f"{OPERATOR}-send-test"
    started = time.monotonic()
    out = _helm(chain.kube, "test", RELEASE, "--namespace", chain.namespace, "--timeout", "120s",
                check=False)
    logs = _pod_logs(chain.kube, chain.namespace, test_pod)
    assert out.returncode == 0, f"{out.stdout}{out.stderr}\n{logs}"
    assert "Phase:          Succeeded" in out.stdout
    figure("helm test (pod from the image, through the Service), s", round(time.monotonic() - started, 1))

    def arrived() -> list[Transaction] | None:
        return [t for t in smarthost.transactions() if RECIPIENT in t.rcpt_tos] or None

    (tx,) = wait_until(arrived, 60, what=f"the helm test message to {RECIPIENT} at the receiver")
    assert tx.mail_from == SENDER
    assert b"Subject: mta-operator test message" in tx.data
    assert b"DKIM-Signature:" in tx.data  # signed by the MTA on its way
    # The test pod was run (its log is kept after the hook deleted it) and went to the Service's name.
    service = f"{naming.mta(CLUSTER)}.{chain.namespace}.svc:587"
    wait_until(lambda: f"accepted by {service}" in _pod_logs(chain.kube, chain.namespace, test_pod),
               30, what="the test pod's log")
