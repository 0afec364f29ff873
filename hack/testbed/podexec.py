"""Inside a pod's private mount namespace: mount its volumes, make / read-only when asked, drop
privileges and exec the container's command. Run by the pod runner as
``unshare --mount --propagation private -- python -m testbed.podexec SPEC.json``.

SPEC: {"argv": [...], "env": {...}, "mounts": [{"src", "dst", "readOnly"}], "readOnlyRoot": bool,
"uid": int, "gid": int, "workdir": str}. Mount points must exist (the runner creates them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())  # noqa: SIM115 (read once, before exec)
    # Hold every source open first: a mount over /tmp must not hide a source that lives under /tmp.
    sources = [os.open(m["src"], os.O_PATH) for m in spec["mounts"]]
    for fd, m in zip(sources, spec["mounts"], strict=True):
        _mount("--bind", f"/proc/{os.getpid()}/fd/{fd}", m["dst"])
        if m.get("readOnly"):
            _mount("-o", "remount,bind,ro", m["dst"])
    for fd in sources:
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
