"""Helpers for the operator's integration tests: the operator as a real subprocess and a merge patch of a
spec; the examples and the readers of what the operator wrote come from ``support`` (re-exported here)."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mta_operator.api import API_VERSION
from mta_operator.kube.client import KubeClient
from support.examples import CRDS, examples  # re-exported for the tests
from support.objects import apply, condition, cr, decoded, table  # re-exported for the tests
from support.operator_process import start_operator
from support.waiting import stop_process  # re-exported for the tests

__all__ = ["CRDS", "Operator", "apply", "condition", "cr", "decoded", "examples",
           "patch_spec", "stop_process", "table"]


@dataclass
class Operator:
    """``mta-operator run`` for one namespace, logging at DEBUG into ``log_path``."""

    kubeconfig: Path
    namespace: str
    log_path: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        self.proc = start_operator(self.kubeconfig, self.namespace, self.log_path, "--log-level", "DEBUG",
                                   "--table-debounce", "0.05", "--relay-image", "mta-relay:test", *self.extra)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def patch_spec(kube: KubeClient, kind: str, namespace: str, name: str, spec: dict[str, Any]) -> None:
    from mta_operator.kube.client import path

    kube.request("PATCH", path(API_VERSION, kind, namespace, name), {"spec": spec},
                 content_type="application/merge-patch+json")
