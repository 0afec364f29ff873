"""Node operations on the test bed's fake nodes, for tests: drain and uncordon with the real kubectl,
and a node crash with Kubernetes' non-graceful node shutdown flow.

A crash is two things at once, set by one annotate: kwok stops heartbeating the node (it manages only
nodes carrying KWOK_MANAGED), so the node lifecycle controller marks it NotReady after its grace period;
and the pod runner, seeing CRASHED, kills that node's pod processes at once and stops reporting for its
pods, as a dead machine would. ``shut_down`` then applies the out-of-service taint, so the taint
eviction controller deletes the node's pods and the pod GC force-deletes them (the node is not Ready),
and their controllers recreate them elsewhere. This module owns the CRASHED annotation; the pod runner
reads it with ``is_crashed``.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Protocol

KWOK_MANAGED = ("kwok.x-k8s.io/node", "fake")  # kwok --manage-nodes-with-annotation-selector
CRASHED = "testbed.mta-operator.io/crashed"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
# The node lifecycle controller's taints of a node that stopped reporting; gone again once it is Ready.
_UNHEALTHY = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
NOT_READY_TIMEOUT = 150.0  # kube-controller-manager's node-monitor-grace-period is 50 s


class Kubectl(Protocol):
    """cluster.Testbed, or the tests' Kube fixture."""

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
    key, _ = KWOK_MANAGED
    kube.kubectl("annotate", "--overwrite", "node", name, f"{CRASHED}=true", f"{key}-")


def wait_not_ready(kube: Kubectl, name: str, timeout: float = NOT_READY_TIMEOUT) -> dict:
    """Until the node lifecycle controller has noticed the missing heartbeat."""
    return _wait(kube, name, lambda n: not ready(n), "NotReady", timeout)


def shut_down(kube: Kubectl, name: str) -> None:
    """Non-graceful node shutdown: an operator who knows the node is down marks it out of service."""
    kube.kubectl("taint", "node", name, f"{OUT_OF_SERVICE}=nodeshutdown:NoExecute", "--overwrite")


def recover(kube: Kubectl, name: str, timeout: float = NOT_READY_TIMEOUT) -> None:
    """The machine is back: heartbeat again, runner again; then, once Ready, the out-of-service taint is
    lifted, and this waits until the lifecycle controller has removed its own taints too."""
    key, value = KWOK_MANAGED
    kube.kubectl("annotate", "--overwrite", "node", name, f"{key}={value}", f"{CRASHED}-")
    _wait(kube, name, ready, "Ready", timeout)
    kube.kubectl("taint", "node", name, f"{OUT_OF_SERVICE}-", check=False)  # absent when not shut down
    _wait(kube, name, lambda n: not taints(n) & {OUT_OF_SERVICE, *_UNHEALTHY}, "no unhealthy taints",
          timeout)
