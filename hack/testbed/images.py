"""Images on the test bed's node: an OCI archive loaded once (as ``kind load image-archive``), its pods'
containers run from it by a real OCI runtime (runc) instead of from this checkout.

Why runc from the pod runner and not a real kubelet: a kubelet built from the test bed's Kubernetes
version with Debian's containerd and runc does run a pod here (with containerd's
``restrict_oom_score_adj``: this sandbox has no CAP_SYS_RESOURCE, so the CRI's -998 for the pause
container fails with ``nsexec: failed to update /proc/self/oom_score_adj: Permission denied``), but a
pod network of its own would leave the pods without the API server (127.0.0.1 here, no kube-proxy) and
needs routes beside the test host's 198.18.0.0/16 on lo. So the runner keeps the network (every pod in
the test host's namespace, at its pod IP) and hands the rest to runc: the image's root filesystem,
read-only, the user and capabilities of the securityContext, no_new_privs, a seccomp filter, cgroup
limits from ``resources.limits``, and pid/ipc/uts/mount namespaces of the container's own. crun is
not used: it refuses this machine's hybrid cgroup layout ("cgroups in hybrid mode not supported").

``load(state_dir, archive, name)`` unpacks the archive's image (umoci) into ``STATE/images/<name>``;
a container whose ``image`` is that name runs from it. ``exec_argv`` is ``kubectl exec``'s stand-in.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

IMAGES = "images"
RUNC_ROOT = "runc"
CGROUP_PARENT = "mta-testbed"  # under the pod runner's own cgroup: nothing is left at the hierarchy root
# Blocked with EPERM whatever the capabilities (a subset of the container runtimes' default profile:
# what lets a process leave or reshape its sandbox, load kernel code or reach the kernel keyring).
SECCOMP_DENIED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "init_module", "kexec_file_load", "kexec_load", "keyctl", "mount", "move_mount",
    "name_to_handle_at", "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root", "ptrace",
    "reboot", "request_key", "setns", "settimeofday", "swapoff", "swapon", "umount2", "unshare",
    "userfaultfd",
)
_DEFAULT_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime",
                                                                         "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec",
                                                                                   "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev",
                                                                          "ro"]},
]


def _slug(name: str) -> str:
    short = re.sub(r"^(docker\.io/)?(library/)?", "", name)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", short)


def image_dir(state_dir: Path, name: str) -> Path:
    return state_dir / IMAGES / _slug(name)


def find(state_dir: Path, name: str) -> Path | None:
    found = image_dir(state_dir, name)
    return found if (found / "image.json").exists() else None


def load(state_dir: Path, archive: Path, name: str) -> Path:
    """Unpack the archive's (only) image as ``name``: rootfs/ and image.json (its config)."""
    target = image_dir(state_dir, name)
    if (target / "image.json").exists():
        return target
    with tempfile.TemporaryDirectory(dir=state_dir) as tmp:
        layout = Path(tmp) / "layout"
        with tarfile.open(archive) as tar:
            tar.extractall(layout, filter="data")
        (manifest,) = json.loads((layout / "index.json").read_text())["manifests"]
        tag = manifest["annotations"]["org.opencontainers.image.ref.name"]
        bundle = Path(tmp) / "bundle"
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                       capture_output=True)
        config = json.loads((bundle / "config.json").read_text())  # umoci's runtime spec of the image
        target.mkdir(parents=True, exist_ok=True)
        (bundle / "rootfs").rename(target / "rootfs")
        process = config["process"]
        (target / "image.json").write_text(json.dumps({
            "args": process.get("args", []), "env": process.get("env", []),
            "user": process.get("user", {}), "cwd": process.get("cwd", "/"), "name": name}))
    return target


def unload_all(state_dir: Path) -> None:
    shutil.rmtree(state_dir / IMAGES, ignore_errors=True)


def runc(state_dir: Path, *args: str) -> list[str]:
    return ["runc", "--root", str(state_dir / RUNC_ROOT), *args]


def container_id(pod: dict, container: str) -> str:
    return f"{pod['metadata']['uid'][:8]}-{container}"


def running(state_dir: Path, pod: dict, container: str) -> bool:
    """Whether the pod's container runs from its image here (a running runc container), not from the
    checkout."""
    state = subprocess.run(runc(state_dir, "state", container_id(pod, container)), capture_output=True,
                           text=True, check=False)
    return state.returncode == 0 and json.loads(state.stdout).get("status") == "running"


def exec_argv(state_dir: Path, pod: dict, container: str, command: list[str]) -> list[str]:
    """``kubectl exec POD -c CONTAINER -- COMMAND``: a process in the running container, as its user."""
    return runc(state_dir, "exec", container_id(pod, container), *command)


def image_config(image: Path) -> dict:
    return json.loads((image / "image.json").read_text())


def _quantity(value: str | int) -> float:
    text = str(value)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def resources(spec: dict) -> dict:
    """``resources.limits`` as cgroup limits (memory in bytes, cpu as a CFS quota per 100 ms)."""
    limits = (spec.get("resources") or {}).get("limits") or {}
    out: dict = {"pids": {"limit": 4096}}
    if "memory" in limits:
        out["memory"] = {"limit": int(_quantity(limits["memory"]))}
    if "cpu" in limits:
        out["cpu"] = {"period": 100000, "quota": max(1000, int(_quantity(limits["cpu"]) * 100000))}
    return out


def capabilities(security: dict) -> list[str]:
    caps = security.get("capabilities") or {}
    drop = set(caps.get("drop") or [])
    added = [f"CAP_{c}" for c in caps.get("add") or []]
    # The runtimes' default set, unless the container drops it.
    default = [] if "ALL" in drop else [f"CAP_{c}" for c in (
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
        "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE") if c not in drop]
    return sorted(set(default + added))


def runtime_spec(image: Path, *, argv: list[str], env: dict[str, str], mounts: list[dict], uid: int,
                 gid: int, security: dict, spec: dict, hostname: str, cgroup: str) -> dict:
    """The OCI runtime spec (config.json) of one container run from ``image``."""
    if not security.get("readOnlyRootFilesystem"):
        raise ValueError(f"container {spec['name']}: the pod runner runs image containers only with "
                         "readOnlyRootFilesystem (every container shares the unpacked image)")
    caps = capabilities(security)
    return {
        "ociVersion": "1.0.2",
        "hostname": hostname,
        "root": {"path": str(image / "rootfs"), "readonly": True},
        "process": {
            "terminal": False, "args": argv, "cwd": spec.get("workingDir") or image_config(image)["cwd"],
            "env": [f"{k}={v}" for k, v in env.items()],
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "noNewPrivileges": not security.get("allowPrivilegeEscalation", True) or not caps,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            # No rlimits: raising one needs CAP_SYS_RESOURCE, which this sandbox lacks; the runner's
            # own limits are inherited.
        },
        "mounts": [*_DEFAULT_MOUNTS, *({"destination": m["dst"], "type": "bind", "source": m["src"],
                                       "options": ["rbind", "rprivate", *(["ro"] if m["readOnly"] else [])]}
                                      for m in mounts)],
        "linux": {
            # No network namespace: the pod's IP is a local address of the test host's namespace.
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "cgroupsPath": cgroup,
            "resources": resources(spec),
            "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                        "syscalls": [{"names": list(SECCOMP_DENIED), "action": "SCMP_ACT_ERRNO"}]},
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                            "/proc/scsi"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }


def command(image: Path, spec: dict) -> list[str]:
    """Kubernetes' rule: ``command`` replaces the ENTRYPOINT (and drops CMD), ``args`` replace CMD."""
    if spec.get("command"):
        return [*spec["command"], *(spec.get("args") or [])]
    return [*image_config(image)["args"], *(spec.get("args") or [])]


def env(image: Path, container_env: dict[str, str]) -> dict[str, str]:
    """The image's ENV, under the container's own."""
    base = dict(e.split("=", 1) for e in image_config(image)["env"])
    return {**base, **container_env}
