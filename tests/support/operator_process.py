"""``mta-operator run`` as a real process, for the tiers that run the operator against an API server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXE = Path(sys.executable).parent / "mta-operator"


def start_operator(kubeconfig: Path, namespace: str, log_path: Path, *extra: str,
                   log_mode: str = "ab") -> subprocess.Popen[bytes]:
    """The operator watching ``namespace``, its output (stdout and stderr, unbuffered) in ``log_path``
    (appended to, or with ``log_mode="wb"`` started afresh); ``extra`` are more ``run`` options."""
    with log_path.open(log_mode) as log:
        return subprocess.Popen(
            [str(EXE), "run", "--kubeconfig", str(kubeconfig), "--namespace", namespace, *extra],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
