"""Persistent volumes on the test bed: the default StorageClass, served by kube-controller-manager's own
hostPath provisioner, with every volume kept inside the test bed's state directory.

kube-controller-manager's ``--enable-hostpath-provisioner`` (provisioner ``kubernetes.io/host-path``)
creates each volume as ``/tmp/hostpath_pv/<uuid>`` (a path fixed in its source) and its deleter removes
that directory when a released PV's reclaim policy is Delete. The test bed runs kube-controller-manager
and the pod runner, the two processes that touch those directories, in a mount namespace of their own
where ``/tmp/hostpath_pv`` is a bind mount of ``STATE/volumes``: the PV objects name the path the
provisioner chose, the bytes live in the state directory, and a stopped test bed leaves no volume behind
elsewhere. This module owns that mapping; tests that look at a volume's files from outside use
``volume_dir``.
"""

from __future__ import annotations

from pathlib import Path

STORAGE_CLASS = "standard"
PROVISIONER = "kubernetes.io/host-path"
# Fixed in k8s.io/kubernetes pkg/volume/hostpath (hostPathProvisioner.Provision, basePath "hostpath_pv").
PROVISIONER_ROOT = Path("/tmp/hostpath_pv")
VOLUMES = "volumes"  # under the state directory


def storage_class() -> dict:
    """The default StorageClass. Immediate binding: a claim binds as soon as it exists, so a pod is never
    held by the scheduler for its volume; the volumes have no node affinity (see README)."""
    return {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS,
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
    }


def volumes_dir(state_dir: Path) -> Path:
    return state_dir / VOLUMES


def prepare(state_dir: Path) -> list[Path]:
    """Create STATE/volumes and the mount point; returns the paths outside the state directory for
    `testbed down` to remove again. The mount point is always returned, even when it exists: test beds
    running side by side share it, and the last one down removes it (empty and mounted nowhere)."""
    volumes_dir(state_dir).mkdir(parents=True, exist_ok=True)
    PROVISIONER_ROOT.mkdir(parents=True, exist_ok=True)
    return [PROVISIONER_ROOT]


def host_view(state_dir: Path, argv: list[str]) -> list[str]:
    """argv, run in a new mount namespace where PROVISIONER_ROOT shows STATE/volumes. Mounts of the host
    still propagate in (slave), ours never out. The process keeps its pid (unshare and sh exec)."""
    script = f'mkdir -p {PROVISIONER_ROOT} && mount --bind "$0" {PROVISIONER_ROOT} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script,
            str(volumes_dir(state_dir)), *argv]


def volume_dir(state_dir: Path, host_path: str) -> Path:
    """Where a provisioned PV's hostPath (as written in the PV) lives, seen from outside the namespace."""
    relative = Path(host_path).relative_to(PROVISIONER_ROOT)
    return volumes_dir(state_dir) / relative
