"""A real Prometheus for the tests: its scrape config derived from the chart's PodMonitors the way the
Prometheus Operator derives it (kubernetes_sd pod role, keep by the selector's labels and the named
container port, namespace/pod/container/endpoint labels, the endpoint's relabelings), the process
(``prometheus`` from the test bed's cache), and its HTTP query API."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support.ports import free_port


def _label(name: str) -> str:
    """A Kubernetes label name as a meta label suffix (app.kubernetes.io/name -> app_kubernetes_io_name)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _relabelings(endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label", "replacement": "replacement",
            "regex": "regex", "action": "action", "separator": "separator"}
    return [{keys[k]: v for k, v in r.items()} for r in endpoint.get("relabelings", [])]


def scrape_config(monitor: dict[str, Any], interval: str, kubeconfig: Path | None,
                  static_target: str | None = None) -> dict[str, Any]:
    """One scrape job per PodMonitor (its one endpoint). ``static_target`` replaces pod discovery with one
    host:port (a process the test runs in place of the chart's pod) and keeps everything else."""
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    meta = monitor["metadata"]
    job: dict[str, Any] = {
        "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/0",
        "scrape_interval": interval, "metrics_path": endpoint.get("path", "/metrics"),
        "scheme": endpoint.get("scheme", "http")}
    if endpoint.get("tlsConfig", {}).get("insecureSkipVerify"):
        job["tls_config"] = {"insecure_skip_verify": True}
    relabel: list[dict[str, Any]] = []
    if static_target is not None:
        job["static_configs"] = [{"targets": [static_target], "labels": {"namespace": meta["namespace"],
                                                                          "endpoint": endpoint["port"]}}]
    else:
        sd: dict[str, Any] = {"role": "pod"}
        if kubeconfig is not None:
            sd["kubeconfig_file"] = str(kubeconfig)
        names = monitor["spec"].get("namespaceSelector", {}).get("matchNames")
        if names:
            sd["namespaces"] = {"names": names}
        elif not monitor["spec"].get("namespaceSelector", {}).get("any"):
            sd["namespaces"] = {"names": [meta["namespace"]]}
        job["kubernetes_sd_configs"] = [sd]
        relabel += [{"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)",
                     "action": "drop"}]
        for key, value in monitor["spec"]["selector"].get("matchLabels", {}).items():
            relabel.append({"source_labels": [f"__meta_kubernetes_pod_label_{_label(key)}",
                                              f"__meta_kubernetes_pod_labelpresent_{_label(key)}"],
                            "regex": f"({re.escape(value)});true", "action": "keep"})
        relabel += [
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"],
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
        ]
    job["relabel_configs"] = relabel + _relabelings(endpoint)
    return job


@dataclass
class Prometheus:
    """``prometheus`` on 127.0.0.1 with a config and rule files, in a state directory of the test's."""

    binary: Path
    state: Path
    config: dict[str, Any]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Prometheus:
        self.state.mkdir(parents=True, exist_ok=True)
        config_file = self.state / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        with (self.state / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), f"--config.file={config_file}",
                 f"--storage.tsdb.path={self.state / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"prometheus not ready in {timeout}s: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.state / "prometheus.log").read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; the JSON answer, errors included (a bad query answers 400 with its reason)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return json.loads(error.read())

    def query(self, expr: str) -> Any:
        return self.api("query", query=expr)
