"""Inside a pod's private mount namespace: mount its volumes, make / read-only when asked, drop
privileges and exec the container's command. Run by the pod runner as
``unshare --mount --propagation private -- python -m testbed.podexec SPEC.json``.

SPEC: {"argv": [...], "env": {...}, "mounts": [{"src", "dst", "readOnly"}], "readOnlyRoot": bool,
"uid": int, "gid": int, "workdir": str, "image": [paths a volume must not hide]}. Mount points must
exist (the runner creates them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _bind(fd: int, dst: str, read_only: bool) -> None:
    # --no-canonicalize: mount(8) would otherwise resolve the fd back to a path name, which a volume
    # mounted meanwhile may cover.
    _mount("--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{fd}", dst)
    if read_only:
        _mount("-o", "remount,bind,ro", dst)


def _same(path: str, fd: int) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())  # noqa: SIM115 (read once, before exec)
    # Hold every source open first: a mount over /tmp must not hide a source that lives under /tmp.
    sources = [os.open(m["src"], os.O_PATH) for m in spec["mounts"]]
    image = {path: os.open(path, os.O_PATH) for path in spec.get("image", [])}
    for fd, m in zip(sources, spec["mounts"], strict=True):
        _bind(fd, m["dst"], bool(m.get("readOnly")))
    # The image (interpreter, venv, checkout) stays visible where a volume now covers it.
    for path, fd in image.items():
        if not _same(path, fd):
            os.makedirs(path, exist_ok=True)
            _bind(fd, path, True)
    for fd in [*sources, *image.values()]:
        os.close(fd)
    if spec.get("readOnlyRoot"):
        # After the volumes: a bind mount copies its source mount's flags, so binding from a read-only /
        # would make every volume read-only. A per-mount flag in this namespace only; the host's / stays rw.
        _mount("-o", "remount,bind,ro", "/")
    os.chdir(spec.get("workdir") or "/")
    ids = ["--reuid", str(spec["uid"]), "--regid", str(spec["gid"]), "--clear-groups"]
    argv = ["setpriv", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", *ids,
            "--", *spec["argv"]]
    os.execvpe("setpriv", argv, spec["env"])  # noqa: S606


if __name__ == "__main__":
    main(sys.argv[1])
