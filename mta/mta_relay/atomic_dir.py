"""Kubelet's atomic directory layout (its AtomicWriter): the one writer and reader of a ``..data`` volume.

The format, as kubelet writes Secret and ConfigMap volumes::

    DIR/..2024_05_01_12_00_00.123456/    one snapshot: every file of one generation (subdirectories allowed)
    DIR/..data -> ..2024_05_01_12_00_00.123456
    DIR/relay.yaml -> ..data/relay.yaml  one link per top-level name, always through ..data
    DIR/tls -> ..data/tls

A publication writes a new snapshot, then swaps ``..data`` to it with one rename(2), so a reader that
resolves ``..data`` once (``snapshot``) and reads everything below that path sees one generation, never
a mix; then it adds the links of new top-level names, removes the links of names no longer published,
and removes the old snapshots (a reader still inside one gets FileNotFoundError and reads again).
Entries whose names start with ``..`` are the layout's own; other plain files and directories in DIR
are left alone (a nested volume such as ``DIR/credentials`` may live there).

Used by the relay pod's config watcher, the test bed's kubelet and the tests; pure file I/O.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"
_SNAPSHOT_STAMP = "..%Y_%m_%d_%H_%M_%S."  # kubelet's: the time of the publication, then a unique tail


def snapshot(directory: Path) -> Path:
    """The directory holding one consistent generation of ``directory``'s files (itself when it is a
    plain directory without ``..data``). Raises FileNotFoundError when ``..data`` points nowhere."""
    data = directory / DATA
    return data.resolve(strict=True) if data.is_symlink() else directory


def holds(directory: Path, files: Mapping[str, bytes]) -> bool:
    """Whether the published generation is exactly ``files`` (relative path → content)."""
    data = directory / DATA
    if not data.is_symlink():
        return False
    try:
        current = data.resolve(strict=True)
        present = {p.relative_to(current).as_posix() for p in current.rglob("*") if p.is_file()}
        return present == set(files) and all((current / rel).read_bytes() == content
                                              for rel, content in files.items())
    except FileNotFoundError:
        return False


def publish(directory: Path, files: Mapping[str, bytes], modes: Mapping[str, int] | None = None) -> Path:
    """Publish ``files`` (relative paths, subdirectories allowed) as ``directory``'s new generation and
    return its snapshot directory. ``modes``: file modes by path (others keep the process's default)."""
    directory.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=time.strftime(_SNAPSHOT_STAMP), dir=directory))
    for name, content in files.items():
        if name.startswith(("..", "/")) or ".." in Path(name).parts:
            raise ValueError(f"{name!r}: a published name is relative and does not start with '..'")
        target = new / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if modes and name in modes:
            target.chmod(modes[name])
    for sub in [new, *(p for p in new.rglob("*") if p.is_dir())]:
        sub.chmod(0o755)  # mkdtemp makes 0700; every container user of the volume must read it
    _swap_link(directory, DATA, new.name)  # the atomic step: readers see the old or the new generation
    tops = {name.split("/", 1)[0] for name in files}
    for top in sorted(tops):
        link = directory / top
        if not (link.is_symlink() and os.readlink(link) == f"{DATA}/{top}"):
            _swap_link(directory, top, f"{DATA}/{top}")
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            if entry.name != DATA and entry != new and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)  # older snapshots, a crashed writer's too
        elif entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    return new


def _swap_link(directory: Path, name: str, target: str) -> None:
    tmp = directory / f"..{name}_tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, directory / name)  # rename(2) over whatever was there
