"""The project's examples/ as objects for tests: moved into a test's namespace, ready to apply."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CRDS = ROOT / "crds"


def examples(namespace: str, managed_tls: bool = True) -> list[dict[str, Any]]:
    """The examples/ objects in ``namespace`` (no Namespace object); managed_tls drops the cert-manager
    issuerRef (the test bed has no cert-manager) so the Cluster can become Ready."""
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] == "Namespace":
                continue
            doc = copy.deepcopy(doc)
            doc["metadata"]["namespace"] = namespace
            if doc["kind"] == "Cluster" and managed_tls:
                doc["spec"]["tls"] = {}
            docs.append(doc)
    return docs
