"""Scale benchmark of the operator: N SmtpCredentials on one Cluster, against a private test bed.

    PYTHONPATH=hack .venv/bin/python -m bench.operator.scale [--sizes 1,100,1000,10000] [--changes 30]

For each size, in a fresh namespace with a fresh operator process: time from the first create until every
credential is Ready and in the credential table; then single changes (one credential's allowedIPs) timed
until the table in the API carries them (read through the manifest, as the relay's watcher reads it);
the operator's own API calls per credential (its "api calls" log line; kopf's few watch/list requests
are not included); its peak resident memory. Floors: 10k converge < 300 s, change p99 < 2 s,
memory < 300 MB. There is no peer operator to run side by side offline; the floors are the yardstick.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import config
from mta_operator.api import API_VERSION
from mta_operator.kube.client import KubeClient, path
from testbed import cluster as testbed

ROOT = Path(__file__).resolve().parents[2]


def _decoded(secret: dict[str, Any] | None, key: str) -> str:
    return base64.b64decode(((secret or {}).get("data") or {}).get(key, "")).decode()


class TableReader:
    """Reads the table through its manifest, fetching only shards whose digest changed."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube, self.ns = kube, namespace
        self.shards: dict[str, tuple[str, dict[str, Any]]] = {}
        self.manifest = ""

    def poll(self) -> bool:
        text = _decoded(self.kube.get("v1", "Secret", self.ns, "main-mta-credentials"), "manifest.json")
        if not text or text == self.manifest:
            return False
        fresh = {}
        for ref in json.loads(text)["shards"]:
            have = self.shards.get(ref["key"])
            if have and have[0] == ref["sha256"]:
                fresh[ref["key"]] = have
                continue
            shard = json.loads(_decoded(self.kube.get("v1", "Secret", self.ns, ref["secret"]), ref["key"]))
            fresh[ref["key"]] = (ref["sha256"], {c["username"]: c for c in shard["credentials"]})
        self.shards, self.manifest = fresh, text
        return True

    def entries(self) -> dict[str, Any]:
        return {u: c for _, creds in self.shards.values() for u, c in creds.items()}


def _cred(namespace: str, i: int) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "SmtpCredential",
            "metadata": {"name": f"app-{i:05d}", "namespace": namespace},
            "spec": {"clusterRef": {"name": "main"}, "domains": {"mode": "AllClusterDomains"},
                     "allowedIPs": ["10.0.0.0/8"]}}


def _ready_count(kube: KubeClient, namespace: str) -> int:
    items = kube.list(API_VERSION, "SmtpCredential", namespace)
    return sum(1 for i in items for c in i.get("status", {}).get("conditions", [])
               if c["type"] == "Ready" and c["status"] == "True")


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _api_calls(log: Path) -> dict[str, int]:
    calls: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"api calls"' in line:
            calls = json.loads(line).get("api_calls", calls)
    return calls


def run_size(tb: testbed.Testbed, kube: KubeClient, n: int, changes: int, workdir: Path) -> dict[str, Any]:
    ns = f"bench-{n}-{uuid.uuid4().hex[:6]}"
    tb.kubectl("create", "namespace", ns)
    log = workdir / f"operator-{n}.log"
    op = subprocess.Popen([str(Path(sys.executable).parent / "mta-operator"), "run", "--kubeconfig",
                           str(tb.kubeconfig), "--namespace", ns, "--log-level", "INFO",
                           "--relay-image", "mta-relay:bench"],
                          stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        kube.apply({"apiVersion": API_VERSION, "kind": "Cluster",
                    "metadata": {"name": "main", "namespace": ns},
                    "spec": {"hostname": "smtp.example.com", "mtas": 2}}, manager="bench")
        reader = TableReader(kube, ns)
        start = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: kube.create(_cred(ns, i)), range(n)))
        created = time.monotonic() - start
        while True:
            reader.poll()
            if len(reader.entries()) == n and _ready_count(kube, ns) == n:
                break
            if time.monotonic() - start > 900:
                raise TimeoutError(f"{n}: not converged in 900 s")
            time.sleep(0.5 if n < 1000 else 2)
        converged = time.monotonic() - start
        time.sleep(6)  # let the stats line catch up
        calls = _api_calls(log)
        latencies = []
        for j in range(changes):
            i = j % n
            ip = f"192.0.2.{j % 250 + 1}"
            t0 = time.monotonic()
            kube.request("PATCH", path(API_VERSION, "SmtpCredential", ns, f"app-{i:05d}"),
                         {"spec": {"allowedIPs": [ip]}}, content_type="application/merge-patch+json")
            while True:
                reader.poll()
                if reader.entries()[f"app-{i:05d}"].get("allowedIPs") == [f"{ip}/32"]:
                    break
                if time.monotonic() - t0 > 30:
                    raise TimeoutError("change did not reach the table in 30 s")
                time.sleep(0.01)
            latencies.append(time.monotonic() - t0)
            print(f"change {j}: {latencies[-1]:.3f}s", file=sys.stderr)
        latencies.sort()
        return {
            "credentials": n, "create_seconds": round(created, 2), "converge_seconds": round(converged, 2),
            "change_p50_seconds": round(statistics.median(latencies), 3),
            "change_p99_seconds": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
            "api_calls": calls, "api_calls_per_credential": round(sum(calls.values()) / n, 2),
            "operator_cpu_seconds": round(_cpu_seconds(op.pid), 1),
            "operator_peak_rss_mb": round(_memory_kb(op.pid, "VmHWM") / 1024, 1),
            "operator_rss_mb": round(_memory_kb(op.pid, "VmRSS") / 1024, 1),
        }
    finally:
        op.terminate()
        op.wait(20)
        tb.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100,1000,10000")
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "operator-scale.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opbench-"))  # kept: the operator logs are worth reading
    print(f"work directory: {work}", file=sys.stderr)
    if True:
        tb = testbed.up(work / "bed", die_with_parent=True)
        try:
            tb.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            tb.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusters.mta-operator.io",
                       "crd/smtpcredentials.mta-operator.io")
            client = config.new_client_from_config(config_file=str(tb.kubeconfig))
            client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 20
            kube = KubeClient(client)
            results = []
            for n in (int(s) for s in args.sizes.split(",")):
                result = run_size(tb, kube, n, args.changes, work)
                print(json.dumps(result), flush=True)
                results.append(result)
        finally:
            testbed.down(tb.dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
