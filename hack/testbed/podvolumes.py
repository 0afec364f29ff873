"""Materialise a pod's volumes on disk the way kubelet does.

Secret, ConfigMap, downwardAPI and projected volumes are written with kubelet's AtomicWriter layout
(``mta_relay.atomic_dir``, its one implementation here): the files live in a timestamped directory,
``..data`` is a symlink to it and every visible name is a symlink through ``..data``. An update writes a
new directory and swaps ``..data`` with one rename, so a reader never sees half of an update. emptyDir
is a plain directory. hostPath and persistentVolumeClaim volumes are directories of the host, used in
place: a claim resolves (through the caller) to its bound PV's hostPath, so every pod of the claim gets
the same directory, and nothing here ever deletes one.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mta_relay import atomic_dir

from .podspec import Pod, field_ref

# (kind, name) -> {key: bytes} or None when missing; kind is "secret" or "configMap"
Lookup = Callable[[str, str], dict[str, bytes] | None]
TokenSource = Callable[[Pod, dict], str]
# claim name -> the host directory of its bound PV; raises VolumeError while it has none
ClaimSource = Callable[[str], Path]


class VolumeError(RuntimeError):
    pass


def atomic_write(target: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Make target hold exactly files (relative path -> (content, mode)); False when unchanged."""
    contents = {rel: content for rel, (content, _) in files.items()}
    if atomic_dir.holds(target, contents):
        return False
    atomic_dir.publish(target, contents, {rel: mode for rel, (_, mode) in files.items()})
    return True


def _keyed(values: dict[str, bytes], source: dict, default_mode: int, kind: str) -> dict:
    items = source.get("items")
    if not items:
        return {key: (value, default_mode) for key, value in values.items()}
    out = {}
    for item in items:
        if item["key"] not in values:
            if source.get("optional"):
                continue
            raise VolumeError(f"{kind} {source.get('name') or source.get('secretName')} has no key "
                              f"{item['key']}")
        out[item["path"]] = (values[item["key"]], item.get("mode", default_mode))
    return out


def _referenced(kind: str, source: dict, lookup: Lookup, default_mode: int) -> dict:
    name = source.get("secretName") if kind == "secret" else source.get("name")
    values = lookup(kind, name)
    if values is None:
        if source.get("optional"):
            return {}
        raise VolumeError(f"{kind} {name} not found")
    return _keyed(values, source, default_mode, kind)


def _downward(pod: Pod, source: dict, default_mode: int) -> dict:
    return {item["path"]: (field_ref(pod, item["fieldRef"]["fieldPath"]).encode(),
                           item.get("mode", default_mode))
            for item in source.get("items") or [] if "fieldRef" in item}


def volume_files(pod: Pod, volume: dict, lookup: Lookup, token: TokenSource) -> dict | None:
    """Files of one volume; None for emptyDir (a plain directory)."""
    if "emptyDir" in volume:
        return None
    for kind in ("secret", "configMap"):
        if kind in volume:
            src = volume[kind]
            return _referenced(kind, src, lookup, src.get("defaultMode", 0o644))
    if "downwardAPI" in volume:
        src = volume["downwardAPI"]
        return _downward(pod, src, src.get("defaultMode", 0o644))
    if "projected" in volume:
        src = volume["projected"]
        mode = src.get("defaultMode", 0o644)
        files: dict[str, tuple[bytes, int]] = {}
        for part in src.get("sources") or []:
            if "secret" in part:
                files.update(_referenced("secret", {**part["secret"],
                                                    "secretName": part["secret"]["name"]},
                                         lookup, mode))
            elif "configMap" in part:
                files.update(_referenced("configMap", part["configMap"], lookup, mode))
            elif "downwardAPI" in part:
                files.update(_downward(pod, part["downwardAPI"], mode))
            elif "serviceAccountToken" in part:
                sat = part["serviceAccountToken"]
                files[sat["path"]] = (token(pod, sat).encode(), mode)
        return files
    raise VolumeError(f"volume {volume['name']}: unsupported type {sorted(set(volume) - {'name'})}")


def host_path(source: dict) -> Path:
    """The directory (or file) of a hostPath volume, checked or created as its type asks, like kubelet."""
    path, kind = Path(source["path"]), source.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.touch(mode=0o644, exist_ok=True)
    elif kind == "Directory" and not path.is_dir():
        raise VolumeError(f"hostPath type check failed: {path} is not a directory")
    elif kind == "File" and not path.is_file():
        raise VolumeError(f"hostPath type check failed: {path} is not a file")
    elif kind not in ("", "DirectoryOrCreate", "FileOrCreate", "Directory", "File"):
        raise VolumeError(f"hostPath type {kind} is not supported by the pod runner")
    return path


def host_volumes(pod: Pod) -> set[str]:
    """Names of the pod's volumes that are host directories used in place (hostPath, claims)."""
    return {v["name"] for v in pod["spec"].get("volumes") or []
            if "hostPath" in v or "persistentVolumeClaim" in v}


def sync_volumes(pod: Pod, root: Path, lookup: Lookup, token: TokenSource,
                 claim: ClaimSource) -> dict[str, Path]:
    """Create or update every volume of pod under root; returns volume name -> directory. Raises
    VolumeError naming every volume that cannot be mounted yet (kubelet's FailedMount)."""
    dirs, unmounted = {}, []
    for volume in pod["spec"].get("volumes") or []:
        try:
            if "persistentVolumeClaim" in volume:
                dirs[volume["name"]] = claim(volume["persistentVolumeClaim"]["claimName"])
                continue
            if "hostPath" in volume:
                dirs[volume["name"]] = host_path(volume["hostPath"])
                continue
        except VolumeError as exc:
            unmounted.append((volume["name"], str(exc)))
            continue
        path = root / volume["name"]
        files = volume_files(pod, volume, lookup, token)
        if files is None:
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # emptyDir is writable by the pod's user, whoever that is
        else:
            atomic_write(path, files)
        dirs[volume["name"]] = path
    if unmounted:
        raise VolumeError("unmounted volumes=[" + " ".join(n for n, _ in unmounted) + "]: "
                          + "; ".join(reason for _, reason in unmounted))
    return dirs


def decode(data: dict[str, Any] | None, binary: bool) -> dict[str, bytes]:
    """Secret .data is base64; ConfigMap .data is text and .binaryData base64."""
    if not data:
        return {}
    return {k: base64.b64decode(v) if binary else v.encode() for k, v in data.items()}


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
