"""kwok stage configuration: which pods kwok fakes and which it leaves to the pod runner.

kwok plays kubelet for every pod on its nodes, except pods whose first container runs a command the
pod runner executes for real (RUNNABLE). For those, kwok only does the network part (hostIP and a pod
IP from the node's podCIDR, so one allocator hands out every pod IP) and leaves them not Ready; the
runner starts the processes, runs the probes and writes Ready, phase and container states.
"""

from __future__ import annotations

import json

# The MTA pods, and python3 for the runner's own tests. Not the operator's own Deployment (from the Helm
# chart): tests run the operator as a process of their own, and a second copy would fight it; its
# kopf liveness listener on 0.0.0.0 would also take the port from every pod (all pods share one
# network namespace here, so each must listen on its own pod IP).
RUNNABLE = ("mta-relay", "python3")
_COMMAND = ".spec.containers.[0].command.[0]"

_NOT_DELETED = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
_NO_IP = {"key": ".status.podIP", "operator": "DoesNotExist"}
_FAKED = {"key": _COMMAND, "operator": "NotIn", "values": list(RUNNABLE)}
_RUN = {"key": _COMMAND, "operator": "In", "values": list(RUNNABLE)}

_IP_FIELDS = (
    "hostIP: {{ NodeIPWith .spec.nodeName | Quote }}\n"
    "podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid \"\" ) "
    "( or .metadata.name \"\" ) ( or .metadata.namespace \"\" ) | Quote }}\n"
)

_FAKE_READY = (
    "{{ $now := Now }}\n"
    "conditions:\n"
    "{{ range list \"Initialized\" \"Ready\" \"ContainersReady\" }}\n"
    "- lastTransitionTime: {{ $now | Quote }}\n"
    "  status: \"True\"\n"
    "  type: {{ . }}\n"
    "{{ end }}\n"
    "containerStatuses:\n"
    "{{ range .spec.containers }}\n"
    "- image: {{ .image | Quote }}\n"
    "  name: {{ .name | Quote }}\n"
    "  ready: true\n"
    "  started: true\n"
    "  restartCount: 0\n"
    "  state:\n"
    "    running:\n"
    "      startedAt: {{ $now | Quote }}\n"
    "{{ end }}\n"
    + _IP_FIELDS +
    "phase: Running\n"
    "startTime: {{ $now | Quote }}\n"
)

_RUNNER_NETWORK = (
    "{{ $now := Now }}\n"
    "conditions:\n"
    "- lastTransitionTime: {{ $now | Quote }}\n"
    "  status: \"True\"\n"
    "  type: Initialized\n"
    "- lastTransitionTime: {{ $now | Quote }}\n"
    "  status: \"False\"\n"
    "  reason: ContainersNotReady\n"
    "  type: Ready\n"
    "- lastTransitionTime: {{ $now | Quote }}\n"
    "  status: \"False\"\n"
    "  reason: ContainersNotReady\n"
    "  type: ContainersReady\n"
    + _IP_FIELDS +
    "phase: Pending\n"
    "startTime: {{ $now | Quote }}\n"
)


def _stage(name: str, selector: list[dict], nxt: dict) -> dict:
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                     "selector": {"matchExpressions": selector}, "next": nxt}}


def pod_stages() -> list[dict]:
    return [
        _stage("pod-ready", [_NOT_DELETED, _NO_IP, _FAKED], {"statusTemplate": _FAKE_READY}),
        _stage("pod-delete", [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}, _FAKED],
               {"finalizers": {"empty": True}, "delete": True}),
        _stage("pod-network-for-runner", [_NOT_DELETED, _NO_IP, _RUN],
               {"statusTemplate": _RUNNER_NETWORK}),
    ]


def config_text() -> str:
    """kwok --config content: YAML documents (JSON is YAML)."""
    return "\n---\n".join(json.dumps(stage) for stage in pod_stages()) + "\n"
