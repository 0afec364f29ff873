"""Node operations on the test bed's fake nodes, for tests: drain and uncordon with the real kubectl,
and a node crash with Kubernetes' non-graceful node shutdown flow.

A crash is two things: the pod runner, seeing CRASHED on the node, kills that node's pod processes at
once and stops reporting for its pods, as a dead machine would; and kwok stops heartbeating the node,
because the node's Lease (kube-node-lease) is taken over by another holder: kwok renews and manages
only nodes whose Lease it holds, and it leaves a Lease held by someone else alone until it expires. (Its
node annotation selector would not do: kwok v0.7 drops an update that stops matching, so the node stays
managed.) The node lifecycle controller then marks the node NotReady after its grace period.
``shut_down`` then applies the out-of-service taint, so the taint eviction controller deletes the node's
pods and the pod GC force-deletes them (the node is not Ready), and their controllers recreate them
elsewhere. This module owns the CRASHED annotation; the pod runner reads it with ``is_crashed`` and
kwok's node stages (stages.py) skip a node that carries it.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Protocol

CRASHED = "testbed.mta-operator.io/crashed"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
# The node lifecycle controller's taints of a node that stopped reporting; gone again once it is Ready.
_UNHEALTHY = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
LEASE_NAMESPACE = "kube-node-lease"
CRASH_HOLDER = "testbed-crashed-node"  # holds a crashed node's Lease so that kwok leaves it alone
CRASH_LEASE_SECONDS = 24 * 3600  # longer than any test: kwok takes the Lease back only when it expires
NOT_READY_TIMEOUT = 150.0  # kube-controller-manager's node-monitor-grace-period is 50 s


class Kubectl(Protocol):
    """cluster.Testbed, or the tests' ReachableCluster (the kube fixture)."""

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]: ...


def is_crashed(meta: Any) -> bool:
    """meta: a node's metadata (client model or dict)."""
    annotations = (meta.get("annotations") if isinstance(meta, dict) else meta.annotations) or {}
    return annotations.get(CRASHED) == "true"


def drain(kube: Kubectl, node: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`kubectl drain`: cordon, then evict every pod through the Eviction API (PodDisruptionBudgets
    respected) and wait until they are gone. Raises CalledProcessError when that fails in timeout."""
    return kube.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                        f"--timeout={int(timeout)}s", timeout=timeout + 30)


def uncordon(kube: Kubectl, node: str) -> None:
    kube.kubectl("uncordon", node)


def node(kube: Kubectl, name: str) -> dict:
    return json.loads(kube.kubectl("get", "node", name, "-o", "json").stdout)


def ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in obj.get("status", {}).get("conditions") or [])


def taints(obj: dict) -> set[str]:
    return {t["key"] for t in obj["spec"].get("taints") or []}


def _wait(kube: Kubectl, name: str, check: Any, what: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        obj = node(kube, name)
        if check(obj):
            return obj
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {name}: {what} not reached in {timeout:.0f}s "
                               f"(conditions {obj['status'].get('conditions')}, taints {taints(obj)})")
        time.sleep(1)


def crash(kube: Kubectl, name: str) -> None:
    """The machine dies: its pods' processes are killed at once, kwok stops its heartbeat."""
    kube.kubectl("annotate", "--overwrite", "node", name, f"{CRASHED}=true")
    # renewTime stays kwok's last renewal: the heartbeat stops there.
    kube.kubectl("patch", "lease", name, "-n", LEASE_NAMESPACE, "--type=merge", "-p", json.dumps(
        {"spec": {"holderIdentity": CRASH_HOLDER, "leaseDurationSeconds": CRASH_LEASE_SECONDS}}))


def wait_not_ready(kube: Kubectl, name: str, timeout: float = NOT_READY_TIMEOUT) -> dict:
    """Until the node lifecycle controller has noticed the missing heartbeat."""
    return _wait(kube, name, lambda n: not ready(n), "NotReady", timeout)


def shut_down(kube: Kubectl, name: str) -> None:
    """Non-graceful node shutdown: an operator who knows the node is down marks it out of service."""
    kube.kubectl("taint", "node", name, f"{OUT_OF_SERVICE}=nodeshutdown:NoExecute", "--overwrite")


def recover(kube: Kubectl, name: str, timeout: float = NOT_READY_TIMEOUT) -> None:
    """The machine is back: heartbeat again, runner again; then, once Ready, the out-of-service taint is
    lifted, and this waits until the lifecycle controller has removed its own taints too."""
    kube.kubectl("annotate", "node", name, f"{CRASHED}-")
    # Without a Lease kwok creates its own again (on its next retry, within its renew interval).
    kube.kubectl("delete", "lease", name, "-n", LEASE_NAMESPACE, "--ignore-not-found")
    _wait(kube, name, ready, "Ready", timeout)
    kube.kubectl("taint", "node", name, f"{OUT_OF_SERVICE}-", check=False)  # absent when not shut down
    _wait(kube, name, lambda n: not taints(n) & {OUT_OF_SERVICE, *_UNHEALTHY}, "no unhealthy taints",
          timeout)
