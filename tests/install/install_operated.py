"""A namespace as a platform team gets it: the chart installed in namespaced mode, the operator running
with the chart's ServiceAccount token (not the admin's), and the examples applied and reconciled."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from install_kit import CHART, helm, set_args
from support.examples import examples
from support.operator_process import start_operator


@dataclass
class Operated:
    namespace: str
    release: str
    admin_kubeconfig: Path
    operator_log: Path

    @property
    def service_account(self) -> str:
        return f"{self.release}-mta-operator"



def token_kubeconfig(admin: Path, token: str, namespace: str, path: Path) -> Path:
    """The admin kubeconfig's server and CA, authenticated with ``token`` instead."""
    config = yaml.safe_load(admin.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "operator",
                                                       "namespace": namespace}}],
        "current-context": "operator"}))
    path.chmod(0o600)
    return path


def operate(kube: Any, namespace: str, release: str, workdir: Path, relay_image: str) -> Iterator[Operated]:
    """Install the chart watching ``namespace``, run the operator as its ServiceAccount (its MTA pods
    from ``relay_image``), apply examples."""
    helm("install", release, str(CHART), "--namespace", namespace, "--take-ownership",
         "--kubeconfig", str(kube.kubeconfig), *set_args({"watchNamespaces": [namespace]}), timeout=180)
    operated = Operated(namespace, release, kube.kubeconfig, workdir / "operator.log")
    token = kube.kubectl("create", "token", operated.service_account, "-n", namespace,
                         "--duration=1h").stdout.strip()
    sa_config = token_kubeconfig(kube.kubeconfig, token, namespace, workdir / "operator.kubeconfig")
    proc = start_operator(sa_config, namespace, operated.operator_log, "--relay-image", relay_image,
                          "--log-level", "DEBUG", log_mode="wb")
    try:
        kube.kubectl("apply", "--server-side", "-f", "-",
                     stdin="\n---\n".join(json.dumps(d) for d in examples(namespace)))
        yield operated
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        helm("uninstall", release, "--namespace", namespace, "--kubeconfig", str(kube.kubeconfig),
             check=False)
