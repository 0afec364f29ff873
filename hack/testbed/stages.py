"""kwok stage configuration: which pods kwok fakes and which it leaves to the pod runner.

kwok plays kubelet for every pod on its nodes, except the pods the pod runner runs for real (``runs``):
those whose first container runs a command the runner executes from this checkout (RUNNABLE), and those
whose first container has ``imagePullPolicy: Never`` (its image must already be on the node: the runner
runs it from an image loaded with images.load, and holds it in ErrImageNeverPull otherwise, as kubelet
does). For those, kwok only does the network part (hostIP and a pod IP from the node's podCIDR, so one
allocator hands out every pod IP) and leaves them not Ready; the runner starts the processes, runs the
probes and writes Ready, phase and container states.

Nodes get kwok's own default node stages (node-initialize, node-heartbeat, copied from kwok v0.7's
kustomize/stage/node), with one selector added: a node annotated as crashed (nodes.CRASHED) matches no
stage, so kwok stops writing its status heartbeat (its Lease is stopped separately, see nodes.py).
"""

from __future__ import annotations

import json

from .nodes import CRASHED

# The MTA pods, and python3 for the runner's own tests. Not the chart's own pods (operator, `helm test`)
# by default: tests run the operator as a process of their own, and a second copy would fight it. A
# release installed with `image.pullPolicy=Never` and its image loaded runs for real (NEVER_PULL).
RUNNABLE = ("mta-relay", "python3")
NEVER_PULL = "Never"
_COMMAND = ".spec.containers.[0].command.[0]"
_PULL = ".spec.containers.[0].imagePullPolicy"

_NOT_DELETED = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
_NO_IP = {"key": ".status.podIP", "operator": "DoesNotExist"}
_FAKED = [{"key": _COMMAND, "operator": "NotIn", "values": list(RUNNABLE)},
          {"key": _PULL, "operator": "NotIn", "values": [NEVER_PULL]}]
# Selectors are ANDed: one stage per way a pod comes to run.
_RUN = {"key": _COMMAND, "operator": "In", "values": list(RUNNABLE)}
_RUN_IMAGE = {"key": _PULL, "operator": "In", "values": [NEVER_PULL]}


def runs(pod: dict) -> bool:
    """Whether the pod runner (not kwok) plays kubelet for this pod: the stages' selectors, in Python."""
    return from_checkout(pod) or pod["spec"]["containers"][0].get("imagePullPolicy") == NEVER_PULL


def from_checkout(pod: dict) -> bool:
    """Whether the pod's command is one the runner can start from this checkout without an image."""
    return (pod["spec"]["containers"][0].get("command") or [""])[0] in RUNNABLE


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


_NODE_CONDITIONS = (
    "{{ $now := Now }}\n"
    "{{ $lastTransitionTime := or .metadata.creationTimestamp $now }}\n"
    "conditions:\n"
    "{{ range NodeConditions }}\n"
    "- lastHeartbeatTime: {{ $now | Quote }}\n"
    "  lastTransitionTime: {{ $lastTransitionTime | Quote }}\n"
    "  message: {{ .message | Quote }}\n"
    "  reason: {{ .reason | Quote }}\n"
    "  status: {{ .status | Quote }}\n"
    "  type: {{ .type | Quote }}\n"
    "{{ end }}\n"
)

_NODE_INITIALIZE = _NODE_CONDITIONS + (
    "addresses:\n"
    "{{ with .status.addresses }}\n{{ YAML . 1 }}\n{{ else }}\n"
    "{{ with NodeIP }}\n- address: {{ . | Quote }}\n  type: InternalIP\n{{ end }}\n"
    "{{ with NodeName }}\n- address: {{ . | Quote }}\n  type: Hostname\n{{ end }}\n"
    "{{ end }}\n"
    "{{ with NodePort }}\ndaemonEndpoints:\n  kubeletEndpoint:\n    Port: {{ . }}\n{{ end }}\n"
    "allocatable:\n"
    "{{ with .status.allocatable }}\n{{ YAML . 1 }}\n{{ else }}\n"
    "  cpu: 1k\n  memory: 1Ti\n  pods: 1M\n{{ end }}\n"
    "capacity:\n"
    "{{ with .status.capacity }}\n{{ YAML . 1 }}\n{{ else }}\n"
    "  cpu: 1k\n  memory: 1Ti\n  pods: 1M\n{{ end }}\n"
    "{{ $nodeInfo := .status.nodeInfo }}\n"
    "{{ $kwokVersion := printf \"kwok-%s\" Version }}\n"
    "nodeInfo:\n"
    "  architecture: {{ or $nodeInfo.architecture \"amd64\" }}\n"
    "  bootID: {{ or $nodeInfo.bootID `\"\"` }}\n"
    "  containerRuntimeVersion: {{ or $nodeInfo.containerRuntimeVersion $kwokVersion }}\n"
    "  kernelVersion: {{ or $nodeInfo.kernelVersion $kwokVersion }}\n"
    "  kubeProxyVersion: {{ or $nodeInfo.kubeProxyVersion $kwokVersion }}\n"
    "  kubeletVersion: {{ or $nodeInfo.kubeletVersion $kwokVersion }}\n"
    "  machineID: {{ or $nodeInfo.machineID `\"\"` }}\n"
    "  operatingSystem: {{ or $nodeInfo.operatingSystem \"linux\" }}\n"
    "  osImage: {{ or $nodeInfo.osImage `\"\"` }}\n"
    "  systemUUID: {{ or $nodeInfo.systemUUID `\"\"` }}\n"
    "phase: Running\n"
)

_READY = '.status.conditions.[] | select( .type == "Ready" ) | .status'
_ALIVE = {"key": f'.metadata.annotations["{CRASHED}"]', "operator": "DoesNotExist"}


def _stage(name: str, selector: list[dict], nxt: dict, kind: str = "Pod", **spec: object) -> dict:
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": kind},
                     "selector": {"matchExpressions": selector}, "next": nxt, **spec}}


def node_stages() -> list[dict]:
    return [
        _stage("node-initialize", [_ALIVE, {"key": _READY, "operator": "NotIn", "values": ["True"]}],
               {"statusTemplate": _NODE_INITIALIZE}, kind="Node"),
        _stage("node-heartbeat", [_ALIVE, {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                                  {"key": _READY, "operator": "In", "values": ["True"]}],
               {"statusTemplate": _NODE_CONDITIONS}, kind="Node",
               delay={"durationMilliseconds": 20000, "jitterDurationMilliseconds": 25000},
               immediateNextStage=True),
    ]


def pod_stages() -> list[dict]:
    return [
        _stage("pod-ready", [_NOT_DELETED, _NO_IP, *_FAKED], {"statusTemplate": _FAKE_READY}),
        _stage("pod-delete", [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}, *_FAKED],
               {"finalizers": {"empty": True}, "delete": True}),
        _stage("pod-network-for-runner", [_NOT_DELETED, _NO_IP, _RUN],
               {"statusTemplate": _RUNNER_NETWORK}),
        _stage("pod-network-for-image", [_NOT_DELETED, _NO_IP, _RUN_IMAGE],
               {"statusTemplate": _RUNNER_NETWORK}),
    ]


def config_text() -> str:
    """kwok --config content: YAML documents (JSON is YAML)."""
    return "\n---\n".join(json.dumps(stage) for stage in [*node_stages(), *pod_stages()]) + "\n"
