"""Run a command inside a private network namespace: the project's own test host.

Inside, ``lo`` is up and the pod CIDR and the Service CIDR are local routes on it, so a process can bind
any pod IP (or ClusterIP: the Service proxy, services.py) and be reached there, while nothing can leave
the namespace. The namespace is anonymous (``unshare --net``):
it disappears with the last process in it, so nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from . import services
from .cluster import POD_CIDR, SERVICE_CIDR


def pod_network_ready() -> bool:
    """True when pod IPs are bindable here (we are inside the test host)."""
    return services.routed_here(POD_CIDR)


def run(command: list[str]) -> int:
    """Re-exec ``python -m testbed _inside COMMAND`` in a new network namespace and wait for it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("`unshare` (util-linux) is required for the test host's network namespace")
    inner = [sys.executable, "-m", "testbed", "_inside", "--", *command]
    return subprocess.run([unshare, "--net", "--", *inner], check=False).returncode


def inside(command: list[str]) -> None:
    """Set up the namespace's network, then replace this process with command."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    subprocess.run([ip, "link", "set", "lo", "up"], check=True)
    for cidr in (POD_CIDR, SERVICE_CIDR):
        subprocess.run([ip, "route", "add", "local", cidr, "dev", "lo"], check=True)
    os.execvp(command[0], command)  # noqa: S606 (the caller's own command)
