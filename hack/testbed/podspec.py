"""Pure helpers of the pod runner: a pod's environment, probes and status, as kubelet derives them.

Pods are plain dicts (the API's JSON), so these functions need neither a cluster nor the client.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

Pod = dict[str, Any]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def field_ref(pod: Pod, path: str) -> str:
    """Value of a downward-API fieldPath (the ones kubelet supports for env)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"), "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return simple[path] or ""
    for prefix, source in (("metadata.labels", meta.get("labels")),
                           ("metadata.annotations", meta.get("annotations"))):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return (source or {}).get(path[len(prefix) + 2:-2], "")
    raise ValueError(f"unsupported fieldPath {path!r}")


def container_env(pod: Pod, container: dict, lookup: Any, service_env: dict[str, str]) -> dict[str, str]:
    """Environment of a container: service variables, envFrom, then env (later wins, as in kubelet).

    lookup(kind, name, key) returns a ConfigMap's or Secret's value (kind "configMap" / "secret"), or
    None when missing.
    """
    env = dict(service_env)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind in ("configMap", "secret"):
            ref = source.get(f"{kind}Ref")
            if ref:
                for key, value in (lookup(kind, ref["name"], None) or {}).items():
                    env[prefix + key] = value
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = _expand(var["value"], env)
            continue
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            env[var["name"]] = field_ref(pod, source["fieldRef"]["fieldPath"])
        for kind in ("configMap", "secret"):
            ref = source.get(f"{kind}KeyRef")
            if ref:
                value = lookup(kind, ref["name"], ref["key"])
                if value is None and not ref.get("optional"):
                    raise LookupError(f"{kind} {ref['name']} key {ref['key']} not found")
                if value is not None:
                    env[var["name"]] = value
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    """$(VAR) references to earlier variables, as kubelet expands them ($$ escapes)."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            name = value[i + 2:end]
            out.append(env.get(name, value[i:end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def command_line(container: dict, env: dict[str, str]) -> list[str]:
    return [_expand(part, env) for part in (container.get("command") or []) + (container.get("args") or [])]


@dataclass(frozen=True)
class Probe:
    kind: str  # httpGet | tcpSocket | exec
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    failure_threshold: int = 3
    success_threshold: int = 1
    command: tuple[str, ...] = ()


def probe(container: dict, name: str) -> Probe | None:
    spec = container.get(name)
    if not spec:
        return None
    timing = (spec.get("initialDelaySeconds", 0), spec.get("periodSeconds", 10),
              spec.get("timeoutSeconds", 1), spec.get("failureThreshold", 3),
              spec.get("successThreshold", 1))
    if "exec" in spec:
        return Probe("exec", 0, "", "", *timing, command=tuple(spec["exec"]["command"]))
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
    for kind in ("httpGet", "tcpSocket"):
        if kind in spec:
            action = spec[kind]
            port = action["port"]
            port = ports[port] if isinstance(port, str) and not port.isdigit() else int(port)
            return Probe(kind, port, action.get("path", "/"), action.get("scheme", "HTTP"), *timing)
    raise ValueError(f"unsupported probe in {container['name']}: {sorted(spec)}")


def sidecars(pod: Pod) -> list[dict]:
    """Native sidecars: init containers with restartPolicy Always (they run for the pod's life)."""
    return [c for c in pod["spec"].get("initContainers") or [] if c.get("restartPolicy") == "Always"]


def _condition(kind: str, ok: bool, reason: str, since: dict[str, str]) -> dict:
    cond = {"type": kind, "status": "True" if ok else "False",
            "lastTransitionTime": since.get(kind, now())}
    if not ok:
        cond["reason"] = reason
    return cond


def status_patch(pod: Pod, containers: dict[str, dict]) -> dict:
    """Pod status for the runner's view of its containers.

    containers: name -> {"running": bool, "ready": bool, "restarts": int, "started_at": str,
    "exit_code": int | None, "done": bool (exited and not to be restarted, by the pod's restartPolicy),
    "waiting_reason", "waiting_message": str (optional)}. lastTransitionTime changes only when a
    condition flips. A pod whose containers are all done has finished: Succeeded when every one exited
    0, Failed otherwise (what `helm test` waits for).
    """
    old = {c["type"]: c for c in pod.get("status", {}).get("conditions") or []}
    all_ready = bool(containers) and all(c["ready"] for c in containers.values())
    since = {}
    for kind, ok in (("Ready", all_ready), ("ContainersReady", all_ready), ("Initialized", True)):
        prev = old.get(kind)
        if prev and (prev["status"] == "True") == ok:
            since[kind] = prev.get("lastTransitionTime") or now()
    running = any(c.get("running") for c in containers.values())
    main = [containers.get(spec["name"], {}) for spec in pod["spec"]["containers"]]
    phase = "Running" if running else "Pending"
    if main and all(c.get("done") for c in main):
        phase = "Succeeded" if all(c.get("exit_code") == 0 for c in main) else "Failed"
    status = {
        "phase": phase,
        "conditions": [_condition("Initialized", True, "", since),
                       _condition("Ready", all_ready, "ContainersNotReady", since),
                       _condition("ContainersReady", all_ready, "ContainersNotReady", since)],
        "containerStatuses": [_container_status(spec, containers.get(spec["name"], {}))
                              for spec in pod["spec"]["containers"]],
    }
    init = [_container_status(spec, containers.get(spec["name"], {})) for spec in sidecars(pod)]
    if init:
        status["initContainerStatuses"] = init
    return {"status": status}


def _container_status(spec: dict, state: dict) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": spec["name"], "image": spec.get("image", ""),
                             "imageID": "", "ready": bool(state.get("ready")),
                             "restartCount": state.get("restarts", 0),
                             "started": bool(state.get("started", state.get("running")))}
    if state.get("running"):
        entry["state"] = {"running": {"startedAt": state["started_at"]}}
    elif state.get("exit_code") is not None:
        entry["state"] = {"terminated": {"exitCode": state["exit_code"], "reason": "Error"
                                         if state["exit_code"] else "Completed",
                                         "finishedAt": now()}}
    else:
        entry["state"] = {"waiting": {"reason": state.get("waiting_reason") or "ContainerCreating"}}
        if state.get("waiting_message"):  # what holds it back, e.g. a claim not bound yet
            entry["state"]["waiting"]["message"] = state["waiting_message"]
    return entry


def resolv_conf(pod: Pod, cluster_dns: str, domain: str, host: str) -> str:
    """The pod's /etc/resolv.conf as kubelet writes it: ClusterFirst (the default) asks cluster DNS with
    the namespace's search path and ndots:5; Default keeps the node's (``host``, its text); None only
    dnsConfig. dnsConfig's nameservers, searches and options are added (an option given again wins).
    The node's own search domains are not appended (the test host has none of use)."""
    spec = pod["spec"]
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    extra = spec.get("dnsConfig") or {}
    if policy == "Default":
        return host
    servers, searches, options = [], [], {}
    if policy != "None":  # ClusterFirst, and ClusterFirstWithHostNet (no host network here)
        ns = pod["metadata"]["namespace"]
        servers, searches, options = [cluster_dns], [f"{ns}.svc.{domain}", f"svc.{domain}", domain], {
            "ndots": "5"}
    servers += extra.get("nameservers") or []
    searches += [s for s in extra.get("searches") or [] if s not in searches]
    for option in extra.get("options") or []:
        options[option["name"]] = option.get("value")
    lines = [f"search {' '.join(searches)}"] if searches else []
    lines += [f"nameserver {s}" for s in servers]
    if options:
        lines.append("options " + " ".join(k if v is None else f"{k}:{v}" for k, v in options.items()))
    return "\n".join(lines) + "\n"
