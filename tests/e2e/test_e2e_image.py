"""One MTA from the real image on the test bed: the archive of ``make image`` loaded onto the node (as
``kind load image-archive`` would), the operator told to run it (``--relay-image``), and the pod runner
starting its containers with runc (hack/testbed/images.py says why not a kubelet here). The container
runs as UID 10001 on the image's read-only root with no capabilities, a seccomp filter and its memory
limit; killing it gets it restarted in the same pod, and the mail queued on its volume survives."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trustme
from conftest import Chain, _receiver_tls
from durability import QUEUE, Smarthost, deliver_all, pod_uids, send_batch, wait_ready
from e2ekit import CLUSTER, CRDS, OperatorProcess, examples_for_testbed, resolver
from image.build import Image
from mta_operator import naming
from mta_operator.api import KINDS
from support.ports import free_port
from testbed import images, podrunner

if TYPE_CHECKING:
    from conftest import ReachableCluster

IMAGE = "mta-operator:e2e-image"  # a name of the test's own: the suite's other pods keep the checkout


@pytest.fixture(scope="module")
def from_image(kube: ReachableCluster, pod_network: str, oci_image: Image,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, Smarthost]]:
    if kube.testbed is None:
        pytest.skip("needs the test bed's pod runner, not an existing cluster")
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
    log = tmp_path_factory.mktemp("image") / "operator.log"
    smarthost = Smarthost(free_port(), _receiver_tls(ca), ca.cert_pem.bytes())
    operator = OperatorProcess(kube.kubeconfig, namespace, log, image=IMAGE).start()
    chain = Chain(kube, namespace, None, resolver(kube.testbed.ports["dns"]), operator)  # type: ignore[arg-type]
    try:
        docs = examples_for_testbed(namespace, smarthost.port)
        for doc in docs:
            if doc["kind"] == "Cluster":
                doc["spec"]["queue"].update(QUEUE)
        chain.apply(*docs)
        try:
            chain.kubectl("wait", "--for=condition=Ready", "--timeout=180s", f"mtacluster/{CLUSTER}",
                          timeout=190)
            wait_ready(chain, 1)
        except (AssertionError, subprocess.SubprocessError) as error:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise AssertionError(f"{error}\n--- operator log ---\n{tail}") from error
        yield chain, smarthost
    finally:
        smarthost.down()
        operator.stop()
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        trust.unlink(missing_ok=True)


def _pod(chain: Chain) -> dict:
    return chain.get("pod", naming.pod(CLUSTER, 0))


def _exec(chain: Chain, *command: str) -> subprocess.CompletedProcess[str]:
    """``kubectl exec mta-0 -c relay -- COMMAND``, through the runtime (there is no kubelet to proxy)."""
    argv = images.exec_argv(Path(chain.kube.testbed.dir), _pod(chain), "relay", list(command))  # type: ignore[union-attr]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _state(chain: Chain) -> dict:
    cid = images.container_id(_pod(chain), "relay")
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
