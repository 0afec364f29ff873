"""Helpers for the operator's integration tests: the operator as a real subprocess, polling, reading the
credential table the way the relay's watcher does, and the examples moved into a test namespace."""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from mta_operator.api import API_VERSION
from mta_operator.kube.client import KubeClient
from mta_relay import shards
from support.waiting import stop_process  # re-exported for the tests

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CRDS = ROOT / "crds"
T = TypeVar("T")



@dataclass
class Operator:
    """``mta-operator run`` for one namespace, logging at DEBUG into ``log_path``."""

    kubeconfig: Path
    namespace: str
    log_path: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        exe = Path(sys.executable).parent / "mta-operator"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(exe), "run", "--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace,
             "--log-level", "DEBUG", "--table-debounce", "0.05", "--relay-image", "mta-relay:test",
             *self.extra],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


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


def apply(kube: KubeClient, *objs: dict[str, Any]) -> None:
    for obj in objs:
        body = copy.deepcopy(obj)
        if "stringData" in body:
            text = body.pop("stringData")
            body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in text.items()}
        kube.apply(body, manager="tests")


def cr(kube: KubeClient, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(API_VERSION, kind, namespace, name)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in (obj or {}).get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return cond
    return {}


def decoded(secret: dict[str, Any] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in ((secret or {}).get("data") or {}).items()}


def table(kube: KubeClient, namespace: str, cluster: str) -> dict[str, dict[str, Any]]:
    """Username → credential entry, read through the manifest as the relay's watcher reads it."""
    manifest = decoded(kube.get("v1", "Secret", namespace, shards.manifest_secret(cluster)))
    if not manifest:
        return {}
    out = {}
    for ref in shards.decode_manifest(manifest[shards.MANIFEST_KEY]):
        text = decoded(kube.get("v1", "Secret", namespace, ref.secret))[ref.key]
        out.update({c["username"]: c for c in json.loads(text)["credentials"]})
    return out


def patch_spec(kube: KubeClient, kind: str, namespace: str, name: str, spec: dict[str, Any]) -> None:
    from mta_operator.kube.client import path

    kube.request("PATCH", path(API_VERSION, kind, namespace, name), {"spec": spec},
                 content_type="application/merge-patch+json")
