"""The pod runner: kubelet for the pods kwok leaves to us (stages.runs).

For each such pod bound to a fake node it materialises the volumes from the real Secrets and
ConfigMaps (atomic symlink swaps, refreshed every VOLUME_SYNC seconds like kubelet's sync loop), mounts
hostPath volumes and claims (a claim's bound PV's hostPath; a pod whose claim is not bound is not started:
its containers wait with the reason, and a FailedMount Event says it, as kubelet does),
runs every container's command and args with its env in a private mount namespace (volumes bind-mounted
at their mountPaths, / read-only when readOnlyRootFilesystem, all capabilities dropped, runAsUser where
the interpreter is reachable by that user), runs readiness and liveness probes against the pod IP and
writes the pod's Ready condition and container statuses; the pod's restartPolicy decides whether an
exited container starts again, and a pod whose containers are done ends Succeeded or Failed. A container
whose image is loaded on the node (images.py) runs from it with runc, with a kubelet-style resolv.conf for
cluster DNS when the test host serves it (services.py); a pod that is ours only because of
``imagePullPolicy: Never`` waits in ErrImageNeverPull until its image is loaded. The runner also runs
the Service proxy (services.py) where ClusterIPs are local. A deleted pod's processes get SIGTERM, then
SIGKILL after the grace period, and the pod object is removed, as kubelet does. A node annotated as
crashed (see nodes.py) is a dead machine: its pods' processes are killed at once and its pods are left
as they are, unreported, until the node comes back.

It runs in the mount namespace of storage.host_view, so provisioned volumes' paths resolve.

Runs as a test-bed component: ``python -m testbed.podrunner STATE_DIR``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from . import images, nodes, podspec, podvolumes, services, stages

log = logging.getLogger("podrunner")
# kubelet refreshes mounted Secrets about once a minute; 30 s keeps tests short and still far
# slower than anything that must react within seconds (that must come from a watch, not a mount).
VOLUME_SYNC = float(os.environ.get("MTA_TESTBED_VOLUME_SYNC", "30"))
TICK = 0.25
# The "image" of every pod: the interpreter, the virtualenv and the checkout (editable install). A volume
# mounted over a parent of one of them (a checkout under /tmp, say) must not hide it (see podexec).
IMAGE_PATHS = sorted({sys.base_prefix, sys.prefix, str(Path(__file__).resolve().parents[2])})
TRUST_DIR = "pod-trust.d"  # extra CA certificates (*.pem) the pods' processes trust, see _image_env
RESTART_BACKOFF = 1.0
CREATED_MOUNTPOINTS = "created-mountpoints.txt"  # paths made outside the state dir, one a line
CLUSTER_DOMAIN = "cluster.local"  # cluster.CLUSTER_DOMAIN (cluster imports this module)


@dataclass
class Container:
    spec: dict
    sidecar: bool = False  # a native sidecar (initContainer with restartPolicy Always)
    proc: subprocess.Popen | None = None
    started_at: str = ""
    restarts: int = 0
    ready: bool = False
    exit_code: int | None = None
    next_start: float = 0.0
    ready_probe: podspec.Probe | None = None
    live_probe: podspec.Probe | None = None
    start_probe: podspec.Probe | None = None
    started: bool = False
    done: bool = False  # exited, and the pod's restartPolicy says it stays so
    probe_due: dict[str, float] = field(default_factory=dict)
    streak: dict[str, int] = field(default_factory=dict)
    # Run from a loaded image by runc (see images.py): how to reach and kill the container itself,
    # which SIGKILL to runc's own process would leave running.
    exec_prefix: list[str] = field(default_factory=list)
    kill_argv: list[str] = field(default_factory=list)


@dataclass
class PodRun:
    pod: dict
    dir: Path
    containers: dict[str, Container]
    volumes: dict[str, Path] = field(default_factory=dict)
    volumes_synced: float = 0.0
    last_status: str = ""
    terminating_since: float | None = None
    error: str = ""
    error_reason: str = ""  # the waiting reason of the containers while error holds them back
    reported: str = ""  # the last FailedMount reason sent as an Event


class Runner:
    def __init__(self, state_dir: Path, api_server_port: int, cluster_dns: str | None = None) -> None:
        self.state_dir = state_dir
        self.dir = state_dir / "pods"
        self.logs = state_dir / "logs" / "pods"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.api = client.CoreV1Api(config.new_client_from_config(str(state_dir / "kubeconfig")))
        self.api_port = api_server_port
        self.service_env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_server_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(api_server_port),
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/", "LANG": "C.UTF-8",
        }
        self.cluster_dns = cluster_dns  # None: pods keep this machine's resolv.conf
        self.created_dirs = state_dir / CREATED_MOUNTPOINTS
        self.trust_dir = state_dir / TRUST_DIR
        self.runs: dict[str, PodRun] = {}
        self.stopping = threading.Event()

    # --- lookups for env and volumes ---------------------------------------------------------
    def _values(self, namespace: str, kind: str, name: str) -> dict[str, bytes] | None:
        try:
            if kind == "secret":
                obj = self.api.read_namespaced_secret(name, namespace)
                return podvolumes.decode(obj.data, binary=True)
            obj = self.api.read_namespaced_config_map(name, namespace)
            return {**podvolumes.decode(obj.data, binary=False),
                    **podvolumes.decode(obj.binary_data, binary=True)}
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _token(self, pod: dict, source: dict) -> str:
        meta = pod["metadata"]
        body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[source["audience"]] if source.get("audience") else [],
            expiration_seconds=source.get("expirationSeconds", 3607),
            bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1",
                                                           name=meta["name"], uid=meta["uid"])))
        sa = pod["spec"].get("serviceAccountName") or "default"
        return self.api.create_namespaced_service_account_token(sa, meta["namespace"], body).status.token

    def _claim_dir(self, namespace: str, name: str) -> Path:
        """The directory of a claim's bound PV (kubelet: PVC -> PV -> volume source)."""
        try:
            pvc = self.api.read_namespaced_persistent_volume_claim(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise podvolumes.VolumeError(f'persistentvolumeclaim "{name}" not found') from None
            raise
        if pvc.status.phase != "Bound" or not pvc.spec.volume_name:
            raise podvolumes.VolumeError(f'persistentvolumeclaim "{name}" is not bound')
        pv = self.api.read_persistent_volume(pvc.spec.volume_name)
        if pv.spec.host_path is None:
            raise podvolumes.VolumeError(f"persistentvolume {pv.metadata.name}: the pod runner mounts "
                                         "only hostPath volumes")
        path = podvolumes.host_path({"path": pv.spec.host_path.path, "type": pv.spec.host_path.type})
        if not path.exists():
            raise podvolumes.VolumeError(f"persistentvolume {pv.metadata.name}: {path} does not exist")
        return path

    def _report_failed_mount(self, run: PodRun, message: str) -> None:
        """A Warning Event on the pod, once per distinct reason, as kubelet's FailedMount."""
        if message == run.reported:
            return
        meta = run.pod["metadata"]
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}."),
            involved_object=client.V1ObjectReference(kind="Pod", api_version="v1", name=meta["name"],
                                                     namespace=meta["namespace"], uid=meta["uid"]),
            reason="FailedMount", type="Warning", message=f"Unable to mount volumes: {message}",
            source=client.V1EventSource(component="kubelet", host=run.pod["spec"]["nodeName"]),
            count=1, first_timestamp=podspec.now(), last_timestamp=podspec.now())
        try:
            self.api.create_namespaced_event(meta["namespace"], event)
            run.reported = message
        except ApiException as exc:
            log.warning("pod %s: FailedMount Event not written: %s", meta["name"], exc.reason)

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        if services.local():
            services.Proxy(self.api.api_client, ("127.0.0.1", self.api_port)).start(self.stopping)
        else:
            log.info("ClusterIPs are not local here: no Service proxy")
        while not self.stopping.is_set():
            try:
                self._sync_pods()
            except Exception:
                log.exception("sync failed")
            self.stopping.wait(TICK)
        for run in list(self.runs.values()):
            self._kill(run, grace=2)

    def _sync_pods(self) -> None:
        pods = self.api.api_client.sanitize_for_serialization(
            self.api.list_pod_for_all_namespaces(field_selector="spec.nodeName!=").items)
        crashed = {n.metadata.name for n in self.api.list_node().items if nodes.is_crashed(n.metadata)}
        seen = set()
        for pod in pods:
            if not stages.runs(pod):
                continue
            if pod["spec"]["nodeName"] in crashed:
                continue  # a dead machine runs nothing and reports nothing; its runs are killed below
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            run = self.runs.get(uid)
            if run is None:
                if pod.get("metadata", {}).get("deletionTimestamp") or not pod["status"].get("podIP"):
                    if pod["metadata"].get("deletionTimestamp"):
                        self._finish_delete(pod)
                    continue
                run = self._admit(pod)
            run.pod = pod
            self._tick(run)
        for uid in set(self.runs) - seen:  # force-deleted behind our back, or its node crashed
            run = self.runs.pop(uid)
            log.info("pod %s/%s gone or its node %s crashed: killing its processes",
                     run.pod["metadata"]["namespace"], run.pod["metadata"]["name"],
                     run.pod["spec"]["nodeName"])
            self._kill(run, grace=0)

    def _admit(self, pod: dict) -> PodRun:
        meta = pod["metadata"]
        # Sidecars first: kubelet starts them in order and main containers only once they have started.
        sidecars = podspec.sidecars(pod)
        run = PodRun(pod, self.dir / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}", {
            c["name"]: Container(c, sidecar=c in sidecars, ready_probe=podspec.probe(c, "readinessProbe"),
                                 live_probe=podspec.probe(c, "livenessProbe"),
                                 start_probe=podspec.probe(c, "startupProbe"))
            for c in [*sidecars, *pod["spec"]["containers"]]})
        run.dir.mkdir(parents=True, exist_ok=True)
        self.runs[meta["uid"]] = run
        log.info("admitted pod %s/%s at %s", meta["namespace"], meta["name"], pod["status"]["podIP"])
        return run

    def _tick(self, run: PodRun) -> None:
        now = time.monotonic()
        if run.pod["metadata"].get("deletionTimestamp"):
            self._terminate(run)
            return
        try:
            if now - run.volumes_synced >= VOLUME_SYNC or not run.volumes:
                ns = run.pod["metadata"]["namespace"]
                run.volumes = podvolumes.sync_volumes(
                    run.pod, run.dir / "volumes",
                    lambda kind, name: self._values(ns, kind, name), self._token,
                    lambda claim: self._claim_dir(ns, claim))
                run.volumes_synced = now
            for c in run.containers.values():
                self._supervise(run, c, now, may_start=c.sidecar or _sidecars_started(run))
            run.error = run.error_reason = ""
        except (podvolumes.VolumeError, LookupError, ValueError, ApiException) as exc:
            if str(exc) != run.error:
                log.warning("pod %s: %s", run.pod["metadata"]["name"], exc)
            run.error = str(exc)
            run.error_reason = "ErrImageNeverPull" if isinstance(exc, ImageNotPresent) else ""
            if isinstance(exc, podvolumes.VolumeError):
                self._report_failed_mount(run, str(exc))
        self._write_status(run)

    def _supervise(self, run: PodRun, c: Container, now: float, may_start: bool) -> None:
        if c.proc is not None and c.proc.poll() is not None:
            c.exit_code, c.proc, c.ready = c.proc.returncode, None, False
            policy = "Always" if c.sidecar else run.pod["spec"].get("restartPolicy") or "Always"
            c.done = policy == "Never" or (policy == "OnFailure" and c.exit_code == 0)
            if not c.done:
                c.restarts += 1
                c.next_start = now + min(RESTART_BACKOFF * 2 ** min(c.restarts, 5), 30)
            log.info("container %s of %s exited %s", c.spec["name"], run.pod["metadata"]["name"],
                     c.exit_code)
        if c.done:
            return
        if c.proc is None:
            if may_start and now >= c.next_start:
                self._start(run, c)
            return
        if c.start_probe is not None and not c.started:
            if now >= c.probe_due.get("startup", 0):
                c.probe_due["startup"] = now + c.start_probe.period
                c.started = self._probe(run.pod["status"]["podIP"], c.start_probe, c)
            return  # readiness and liveness wait for the startup probe, as in kubelet
        for kind, probe in (("readiness", c.ready_probe), ("liveness", c.live_probe)):
            if probe is None or now < c.probe_due.get(kind, 0):
                continue
            c.probe_due[kind] = now + probe.period
            ok = self._probe(run.pod["status"]["podIP"], probe, c)
            streak = c.streak.get(kind, 0)
            streak = max(streak, 0) + 1 if ok else min(streak, 0) - 1
            c.streak[kind] = streak
            if kind == "readiness":
                if ok and streak >= probe.success_threshold:
                    c.ready = True
                elif not ok and -streak >= probe.failure_threshold:
                    c.ready = False
            elif not ok and -streak >= probe.failure_threshold:
                log.info("liveness failed: restarting %s", c.spec["name"])
                self._signal(c, signal.SIGKILL)
        if c.ready_probe is None:
            c.ready = c.start_probe is None or c.started

    def _probe(self, ip: str, probe: podspec.Probe, c: Container) -> bool:
        try:
            if probe.kind == "exec" and c.exec_prefix:  # in the image's container, as its user
                return subprocess.run([*c.exec_prefix, *probe.command], capture_output=True, check=False,
                                      timeout=max(probe.timeout, 1)).returncode == 0
            if probe.kind == "exec":  # inside the container's mount namespace, without privileges
                if c.proc is None:
                    return False
                argv = ["nsenter", "--mount", f"--target={c.proc.pid}", "--", "setpriv",
                        "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--",
                        *probe.command]
                return subprocess.run(argv, env=self.service_env, capture_output=True,
                                      timeout=max(probe.timeout, 1), check=False).returncode == 0
            if probe.kind == "tcpSocket":
                import socket

                with socket.create_connection((ip, probe.port), timeout=probe.timeout):
                    return True
            scheme = "https" if probe.scheme == "HTTPS" else "http"
            with urllib.request.urlopen(  # noqa: S310 (the pod's own probe endpoint)
                    f"{scheme}://{ip}:{probe.port}{probe.path}", timeout=probe.timeout,
                    context=_PROBE_TLS if scheme == "https" else None) as resp:
                return 200 <= resp.status < 400
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _start(self, run: PodRun, c: Container) -> None:
        pod, spec = run.pod, c.spec
        ns = pod["metadata"]["namespace"]

        def lookup(kind: str, name: str, key: str | None) -> object:
            values = self._values(ns, kind, name)
            if values is None:
                return None
            if key is None:
                return {k: v.decode() for k, v in values.items()}
            return values[key].decode() if key in values else None

        image = images.find(self.state_dir, spec.get("image", ""))
        if image is not None:
            self._start_in_image(run, c, image, lookup)
            return
        if not stages.from_checkout(pod):
            # Ours only for imagePullPolicy Never: there is no checkout command to fall back on.
            raise ImageNotPresent(f'Container image "{spec.get("image", "")}" is not present with pull '
                                  "policy of Never")
        env = podspec.container_env(pod, spec, lookup, self.service_env)
        argv = podspec.command_line(spec, env)
        mounts = self._image_trust(run)
        for vm in spec.get("volumeMounts") or []:
            src = run.volumes[vm["name"]] / vm.get("subPath", "")
            dst = Path(vm["mountPath"])
            self._ensure_mountpoint(dst, is_dir=src.is_dir())
            mounts.append({"src": str(src), "dst": str(dst), "readOnly": bool(vm.get("readOnly"))})
        sec = {**(pod["spec"].get("securityContext") or {}), **(spec.get("securityContext") or {})}
        uid, gid = sec.get("runAsUser", 0), sec.get("runAsGroup", sec.get("runAsUser", 0))
        if uid and not _reachable_by_others(Path(sys.executable)):
            log.info("runAsUser %s not applied: the interpreter is not reachable by that user; "
                     "running as uid 0 with every capability dropped", uid)
            uid = gid = 0
        in_place = {v["name"] for v in pod["spec"].get("volumes") or [] if "hostPath" in v}
        for name, path in run.volumes.items():  # fsGroup-like: the pod's user can use its volumes
            if uid and name not in in_place:  # a hostPath keeps its owner, as with kubelet
                _chown_tree(path, uid, sec.get("fsGroup", gid))
        spec_file = run.dir / f"{spec['name']}.exec.json"
        spec_file.touch(mode=0o600)  # env may hold Secret values
        spec_file.write_text(json.dumps({
            "argv": argv, "env": env, "mounts": mounts, "uid": uid, "gid": gid,
            "readOnlyRoot": bool(sec.get("readOnlyRootFilesystem")), "image": IMAGE_PATHS,
            "workdir": spec.get("workingDir") or "/"}))
        out = (run.dir / f"{spec['name']}.log").open("ab")
        c.proc = subprocess.Popen(  # the container's own command, in its own namespace
            ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-m",
             "testbed.podexec", str(spec_file)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": os.environ["PATH"]})
        out.close()
        self._started(run, c, argv)

    def _started(self, run: PodRun, c: Container, argv: list[str]) -> None:
        spec = c.spec
        c.started_at, c.exit_code, c.ready, c.streak = podspec.now(), None, False, {}
        c.started = False
        delay = max(p.initial_delay for p in (c.ready_probe, c.live_probe) if p) if (
            c.ready_probe or c.live_probe) else 0
        c.probe_due = {"readiness": time.monotonic() + (c.ready_probe.initial_delay if c.ready_probe
                                                        else 0),
                       "liveness": time.monotonic() + max(delay, 0)}
        log.info("started %s of %s: %s", spec["name"], run.pod["metadata"]["name"], argv[0])

    def _start_in_image(self, run: PodRun, c: Container, image: Path, lookup: Any) -> None:
        """The container from the loaded image, by runc: its rootfs read-only, the securityContext's
        user, capabilities and no_new_privs, a seccomp filter and the cgroup limits of its resources."""
        pod, spec = run.pod, c.spec
        kube_env = {k: v for k, v in self.service_env.items() if k.startswith("KUBERNETES_")}
        env = images.env(image, podspec.container_env(pod, spec, lookup, kube_env))
        argv = podspec.command_line({**spec, "command": images.command(image, spec), "args": []}, env)
        mounts = self._image_trust(run, system=str(image / "rootfs" / "etc/ssl/certs/ca-certificates.crt"),
                                   target="/etc/ssl/certs/ca-certificates.crt")
        mounts += [{"src": p, "dst": p, "readOnly": True} for p in ("/etc/resolv.conf", "/etc/hosts")
                   if Path(p).exists()]
        if self.cluster_dns:  # kubelet's resolv.conf for the pod, over the machine's
            resolv = run.dir / "resolv.conf"
            host = Path("/etc/resolv.conf")
            resolv.write_text(podspec.resolv_conf(pod, self.cluster_dns, CLUSTER_DOMAIN,
                                                  host.read_text() if host.exists() else ""))
            mounts = [m for m in mounts if m["dst"] != "/etc/resolv.conf"]
            mounts.append({"src": str(resolv), "dst": "/etc/resolv.conf", "readOnly": True})
        for vm in spec.get("volumeMounts") or []:
            src = run.volumes[vm["name"]] / vm.get("subPath", "")
            mounts.append({"src": str(src), "dst": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
        sec = {**(pod["spec"].get("securityContext") or {}), **(spec.get("securityContext") or {})}
        user = images.image_config(image)["user"]
        uid = int(sec.get("runAsUser", user.get("uid", 0)))
        gid = int(sec.get("runAsGroup", user.get("gid", uid)))
        if sec.get("runAsNonRoot") and uid == 0:
            raise ValueError(f"container {spec['name']} has runAsNonRoot and image will run as root")
        in_place = {v["name"] for v in pod["spec"].get("volumes") or [] if "hostPath" in v}
        for name, path in run.volumes.items():  # fsGroup: the pod's user can write its volumes
            if name not in in_place:
                _chown_tree(path, uid, sec.get("fsGroup", gid))
        cid = images.container_id(pod, spec["name"])
        bundle = run.dir / "bundles" / spec["name"]
        bundle.mkdir(parents=True, exist_ok=True)
        config = images.runtime_spec(image, argv=argv, env=env, mounts=mounts, uid=uid, gid=gid,
                                     security=sec, spec=spec, hostname=pod["metadata"]["name"],
                                     cgroup=f"{images.CGROUP_PARENT}/{cid}")
        (bundle / "config.json").touch(mode=0o600)  # env may hold Secret values
        (bundle / "config.json").write_text(json.dumps(config))
        runc = functools.partial(images.runc, self.state_dir)
        subprocess.run(runc("delete", "--force", cid), capture_output=True, check=False)  # a stale one
        out = (run.dir / f"{spec['name']}.log").open("ab")
        c.proc = subprocess.Popen(runc("run", "--bundle", str(bundle), cid), stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        c.exec_prefix = runc("exec", cid)
        c.kill_argv = runc("kill", cid, "KILL")
        self._started(run, c, argv)

    def _image_trust(self, run: PodRun, system: str | None = None, target: str | None = None
                     ) -> list[dict]:
        """CAs in TRUST_DIR play the ones baked into an image (a smarthost's private CA, say): the pod
        sees the system CA bundle (this host's, or the loaded image's) with them appended, bind-mounted
        over it."""
        extra = sorted(self.trust_dir.glob("*.pem")) if self.trust_dir.is_dir() else []
        bundle_of = Path(system or ssl.get_default_verify_paths().openssl_cafile).resolve()
        if not extra or not bundle_of.is_file():
            return []
        bundle = run.dir / "ca-bundle.pem"
        bundle.write_bytes(b"\n".join([bundle_of.read_bytes(), *(p.read_bytes() for p in extra)]))
        return [{"src": str(bundle), "dst": target or str(bundle_of), "readOnly": True}]

    def _ensure_mountpoint(self, path: Path, is_dir: bool) -> None:
        if path.exists():
            return
        missing = [p for p in reversed(path.parents) if not p.exists()]
        if is_dir:
            missing.append(path)
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            missing.append(path)
        record_created_mountpoints(self.created_dirs.parent, missing)

    def _write_status(self, run: PodRun) -> None:
        view = {name: {"running": c.proc is not None, "ready": c.ready and c.proc is not None,
                       "restarts": c.restarts, "started_at": c.started_at, "exit_code": c.exit_code,
                       "started": _started(c), "done": c.done, "waiting_reason": run.error_reason,
                       "waiting_message": run.error}
                for name, c in run.containers.items()}
        patch = podspec.status_patch(run.pod, view)
        key = json.dumps([view, run.error], sort_keys=True)
        if key == run.last_status:
            return
        meta = run.pod["metadata"]
        try:
            self.api.patch_namespaced_pod_status(meta["name"], meta["namespace"], patch)
            run.last_status = key
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- stopping ----------------------------------------------------------------------------
    @staticmethod
    def _signal(c: Container, sig: int) -> None:
        if c.proc is not None and c.kill_argv and sig == signal.SIGKILL:
            # runc forwards every other signal; SIGKILL to runc itself would leave the container (and
            # its cgroup) behind, so the container is killed and runc left to reap it and clean up.
            subprocess.run(c.kill_argv, capture_output=True, check=False)
            return
        if c.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, sig)

    def _terminate(self, run: PodRun) -> None:
        if run.terminating_since is None:
            run.terminating_since = time.monotonic()
            for c in run.containers.values():
                self._signal(c, signal.SIGTERM)
        grace = run.pod["metadata"].get("deletionGracePeriodSeconds") or 0
        alive = [c for c in run.containers.values() if c.proc is not None and c.proc.poll() is None]
        if alive and time.monotonic() - run.terminating_since < grace:
            return
        self._kill(run, grace=0)
        self._finish_delete(run.pod)
        self.runs.pop(run.pod["metadata"]["uid"], None)

    def _kill(self, run: PodRun, grace: float) -> None:
        for c in run.containers.values():
            self._signal(c, signal.SIGTERM if grace else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for c in run.containers.values():
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(c, signal.SIGKILL)
                c.proc.wait()
            c.proc = None
        for log_file in run.dir.glob("*.log"):  # kept after the pod, like `kubectl logs --previous`
            log_file.replace(self.logs / f"{run.dir.name}_{log_file.name}")
        podvolumes.remove(run.dir)

    def _finish_delete(self, pod: dict) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiException):
            self.api.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=0,
                                           body=client.V1DeleteOptions(
                                               grace_period_seconds=0,
                                               preconditions=client.V1Preconditions(uid=meta["uid"])))


class ImageNotPresent(LookupError):
    pass


def _started(c: Container) -> bool:
    return c.proc is not None and (c.start_probe is None or c.started)


def _sidecars_started(run: PodRun) -> bool:
    return all(_started(c) for c in run.containers.values() if c.sidecar)


def _probe_tls() -> ssl.SSLContext:
    # kubelet does not verify the certificate of an HTTPS probe (the pod's own serving certificate).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_PROBE_TLS = _probe_tls()


def _reachable_by_others(path: Path) -> bool:
    """Can a non-root user without capabilities execute path (every parent directory searchable)?"""
    real = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [real, *real.parents])


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for p in [path, *path.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chown(p, uid, gid, follow_symlinks=False)


def _mount_points() -> set[str]:
    """The mount points of every mount namespace on this machine."""
    namespaces, points = set(), set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ns = os.readlink(proc / "ns" / "mnt")
            if ns in namespaces:
                continue
            namespaces.add(ns)
            points.update(line.split()[4].replace("\\040", " ")
                          for line in (proc / "mountinfo").read_text().splitlines())
        except OSError:  # gone meanwhile
            continue
    return points


def record_created_mountpoints(state_dir: Path, paths: list[Path]) -> None:
    """Note paths created on this machine (outside the state directory) for `testbed down` to remove."""
    with (state_dir / CREATED_MOUNTPOINTS).open("a") as f:
        f.writelines(f"{p}\n" for p in paths)


def remove_created_mountpoints(state_dir: Path) -> None:
    """Undo the mount points the runner had to create on this machine (deepest first)."""
    record = state_dir / CREATED_MOUNTPOINTS
    if not record.exists():
        return
    # Removing a directory detaches the mounts on it in every mount namespace: a path another test bed's
    # pod still has a volume on stays (it would otherwise vanish under that pod's process).
    in_use = _mount_points()
    for line in sorted(set(record.read_text().split()), key=len, reverse=True):
        p = Path(line)
        if str(p.resolve()) in in_use:
            continue
        with contextlib.suppress(OSError):
            p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    record.unlink()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    state_dir = Path(sys.argv[1])
    ports = json.loads((state_dir / "state.json").read_text())["ports"]
    Runner(state_dir, int(ports["apiserver"]),
           services.CLUSTER_DNS if ports.get("cluster-dns") else None).run()


if __name__ == "__main__":
    main()
