"""Helpers for the install tests: the chart, helm, rendering and parsing manifests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from testbed import versions

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "mta-operator"
CRDS = REPO / "crds"
KUBE_VERSION = versions.kube_version().lstrip("v")


def helm_path() -> Path:
    return versions.binary("helm")


def helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_path()), *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def set_args(values: dict[str, Any]) -> list[str]:
    """--set-json per top-level key: values of any type reach the chart exactly as given."""
    import json

    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def render(values: dict[str, Any] | None = None, release: str = "mta", namespace: str = "mta-system",
           *extra: str) -> list[dict[str, Any]]:
    """`helm template` of the chart: the objects it would install."""
    out = helm("template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
               *set_args(values or {}), *extra)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def crd_files() -> dict[str, dict[str, Any]]:
    """crds/ by CRD name."""
    docs = (yaml.safe_load(path.read_text()) for path in sorted(CRDS.glob("*.yaml")))
    return {doc["metadata"]["name"]: doc for doc in docs}
