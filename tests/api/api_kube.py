"""Helpers for the API server tests: where the CRDs and examples are, and applying one manifest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"
FIELD_MANAGER = "mta-api-tests"


def apply(kube: Any, namespace: str, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --server-side` of one manifest; the caller checks the outcome."""
    return kube.kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-n", namespace,
                        "-f", "-", stdin=json.dumps(manifest), check=False)


def get(kube: Any, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = kube.kubectl("get", "-n", namespace, f"{kind.lower()}.mta-operator.io", name, "-o", "json")
    return json.loads(out.stdout)
