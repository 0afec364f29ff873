"""The config watcher is PID 1 of its container, where the kernel drops a signal whose action is the
default: it must end on SIGTERM by itself, or every pod deletion waits out the grace period for the
SIGKILL. Run here as PID 1 of a PID namespace of its own (``unshare``), as a container runtime starts it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.waiting import wait_until

pytestmark = pytest.mark.root


def _kubeconfig(path: Path) -> Path:
    """An API server that refuses connections: the watcher keeps retrying its watch, as when the API
    server is away."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1",
                                                "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


def _child(pid: int) -> int | None:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_config_watcher_as_pid_1_ends_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("needs root and unshare (util-linux) for a PID namespace", pytrace=False)
    log = tmp_path / "watcher.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "mta_relay.config_watcher",
             "--namespace", "mail", "--kubeconfig", str(_kubeconfig(tmp_path / "kubeconfig")),
             "--config-dir", str(tmp_path / "config"), "--source", "configmap/main-mta-settings"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        watcher = wait_until(lambda: _child(proc.pid), timeout=10, what="the watcher forked by unshare")
        status = dict(line.split(":", 1) for line in Path(f"/proc/{watcher}/status").read_text().splitlines())
        assert status["NSpid"].split()[-1] == "1"  # PID 1 in its namespace
        wait_until(lambda: b"watch interrupted" in log.read_bytes(), timeout=20,
                   what="the watcher in its watch loop")
        os.kill(watcher, sig)
        assert proc.wait(timeout=10) == 0, log.read_text(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b'"watcher_stopping"' in log.read_bytes()
