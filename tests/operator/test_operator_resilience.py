"""Resilience and secrecy: the operator killed mid-reconcile converges with exactly one of each child and
no regenerated password; it rides out an API server restart and applies an edit made as it comes back;
no password reaches its debug log, annotations, status or Events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import config
from mta_operator.kube.client import KubeClient
from mta_relay.passwords import verify_fast
from opkit import CRDS, Operator, apply, condition, cr, decoded, examples, patch_spec, table
from support.waiting import wait_until
from testbed import cluster as testbed_cluster

pytestmark = pytest.mark.testbed
CREDS = ("billing", "newsletter", "helpdesk", "scanner-3rd-floor", "crm")


def _all_ready(k, namespace: str) -> bool:
    return all(condition(cr(k, "SmtpCredential", namespace, c), "Ready").get("status") == "True"
               for c in CREDS)


def test_operator_kill9_mid_reconcile_converges(k, namespace, run_operator) -> None:
    first = run_operator()
    apply(k, *examples(namespace))
    # Some children exist, the work is not finished: kill without warning.
    wait_until(lambda: k.get("v1", "Secret", namespace, "billing-smtp") is not None, 30, "a first child")
    first.kill9()
    passwords_before = {c: decoded(k.get("v1", "Secret", namespace, f"{c}-smtp")).get("password")
                        for c in CREDS}
    run_operator()
    wait_until(lambda: _all_ready(k, namespace), 60, "all credentials Ready after restart")
    wait_until(lambda: condition(cr(k, "Cluster", namespace, "main"), "Ready").get("status") == "True", 60,
               "Cluster Ready")

    entries = table(k, namespace, "main")
    assert len(entries) == 5
    for c in ("billing", "newsletter", "helpdesk"):
        password = decoded(k.get("v1", "Secret", namespace, f"{c}-smtp"))["password"]
        if passwords_before[c] is not None:
            assert password == passwords_before[c]  # never regenerated
        username = cr(k, "SmtpCredential", namespace, c)["status"]["username"]
        assert verify_fast(entries[username]["passwordVerifier"], password.encode())
    sts = k.list("apps/v1", "StatefulSet", namespace)
    assert [d["metadata"]["name"] for d in sts] == ["main-mta"]
    assert len(k.list("apps/v1", "ControllerRevision", namespace)) == 1  # no rollout from the restarts
    services = sorted(s["metadata"]["name"] for s in k.list("v1", "Service", namespace))
    assert services == ["main-mta", "main-mta-pods"]
    wait_until(lambda: len(k.list("v1", "Pod", namespace)) == 3, 30, "3 pods")


def _restart_apiserver(tb: testbed_cluster.Testbed) -> None:
    pid = tb.pids["kube-apiserver"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    os.kill(pid, signal.SIGKILL)  # a crash, not a drain: clients see connections refused
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or
               "zombie" in Path(f"/proc/{pid}/status").read_text(), 30, "API server stopped")
    time.sleep(3)  # the operator meets refused connections and broken watches
    log = tb.log("kube-apiserver").open("ab")
    proc = subprocess.Popen([a.decode() for a in argv], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    tb.pids["kube-apiserver"] = proc.pid
    tb.save()


def test_operator_survives_api_server_restart(kube, tmp_path: Path) -> None:
    # A private test bed: stopping the shared API server would disturb every other test.
    tb = testbed_cluster.up(tmp_path / "bed", die_with_parent=True)
    op = None
    try:
        # A fresh API server may still be starting its controllers: retry until it takes them.
        wait_until(lambda: tb.kubectl("apply", "--server-side", "-f", str(CRDS), check=False).returncode == 0,
                   60, "CRDs applied")
        wait_until(lambda: tb.kubectl("wait", "--for=condition=Established", "--timeout=10s",
                                      "crd/smtpcredentials.mta-operator.io", "crd/clusters.mta-operator.io",
                                      check=False).returncode == 0, 60, "CRDs established")
        wait_until(lambda: tb.kubectl("create", "namespace", "mail", check=False).returncode == 0, 30,
                   "namespace")
        k = KubeClient(config.new_client_from_config(config_file=str(tb.kubeconfig)))
        op = Operator(tb.kubeconfig, "mail", tmp_path / "operator.log").start()
        apply(k, *[d for d in examples("mail") if d["kind"] in {"Cluster", "SmtpCredential"}
                   and d["metadata"]["name"] in {"main", "newsletter"}])
        wait_until(lambda: condition(cr(k, "SmtpCredential", "mail", "newsletter"), "Ready").get("status")
                   == "True", 60, "newsletter Ready")

        _restart_apiserver(tb)
        wait_until(lambda: tb.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, 60,
                   "API server back")
        patch_spec(k, "SmtpCredential", "mail", "newsletter", {"allowedIPs": ["192.0.2.0/24"]})
        wait_until(lambda: table(k, "mail", "main")["newsletter@example.com"]["allowedIPs"]
                   == ["192.0.2.0/24"], 60, "edit applied after the restart")
        wait_until(lambda: (o := cr(k, "SmtpCredential", "mail", "newsletter"))["status"][
            "observedGeneration"] == o["metadata"]["generation"], 30, "status caught up")
        assert op.proc is not None
        assert op.proc.poll() is None  # it rode it out, it did not crash
    finally:
        if op is not None:
            op.stop()
        testbed_cluster.down(tb.dir)


def test_operator_no_password_in_logs_annotations_status_events(k, kube, namespace, run_operator) -> None:
    op = run_operator()
    apply(k, *examples(namespace))
    wait_until(lambda: _all_ready(k, namespace), 60, "all credentials Ready")
    patch_spec(k, "SmtpCredential", namespace, "billing", {"allowedIPs": ["203.0.113.7"]})
    wait_until(lambda: table(k, namespace, "main")["billing"].get("allowedIPs") == ["203.0.113.7/32"], 10,
               "edit applied")
    secrets = ["replace-me-with-a-long-random-password"]
    secrets += [decoded(k.get("v1", "Secret", namespace, f"{c}-smtp"))["password"]
                for c in ("billing", "newsletter", "helpdesk")]
    assert all(len(s) >= 32 for s in secrets)

    log = op.log()
    assert "DEBUG" in log or '"severity": "debug"' in log  # the log really is at debug level
    documents = [log]
    for plural in ("clusters.mta-operator.io", "sendingdomains", "smtpcredentials"):
        items = json.loads(kube.kubectl("get", plural, "-n", namespace, "-o", "json").stdout)["items"]
        documents += [json.dumps(i["metadata"].get("annotations", {})) + json.dumps(i.get("status", {}))
                      for i in items]
    documents.append(kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    for document in documents:
        for secret in secrets:
            assert secret not in document
