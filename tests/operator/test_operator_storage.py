"""Spool volumes the MTAs cannot get: a StorageClass that does not exist, a claim no provisioner binds.
The Cluster says which and why, in SpoolPersistent and in Ready, and no MTA starts (so none answers 250
for mail it could not keep)."""

from __future__ import annotations

from typing import Any

import pytest
from opkit import apply, condition, cr, examples
from support.waiting import wait_until

pytestmark = pytest.mark.testbed


def _cluster_with_storage(namespace: str, storage: dict[str, Any]) -> list[dict[str, Any]]:
    docs = [d for d in examples(namespace) if d["kind"] == "Cluster"]
    docs[0]["spec"]["queue"]["storage"] = storage
    return docs


def _conditions(k, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cluster = cr(k, "Cluster", namespace, "main")
    return condition(cluster, "SpoolPersistent"), condition(cluster, "Ready")


def test_storage_class_that_does_not_exist(k, namespace, run_operator) -> None:
    run_operator()
    apply(k, *_cluster_with_storage(namespace, {"size": "1Gi", "storageClassName": "no-such-class"}))
    spool, ready = wait_until(lambda: (c := _conditions(k, namespace))[0].get("reason") ==
                              "StorageClassNotFound" and c, 60, "SpoolPersistent=False")
    assert spool["status"] == "False"
    assert "no-such-class" in spool["message"]
    ready = wait_until(lambda: (r := _conditions(k, namespace)[1]).get("reason") == "StorageClassNotFound"
                       and r, 30, "Ready says why")
    assert ready["status"] == "False"
    claims = k.list("v1", "PersistentVolumeClaim", namespace)
    assert claims
    assert all(c["status"]["phase"] == "Pending" for c in claims)
    assert not any(p["status"].get("podIP") and p["status"].get("phase") == "Running"
                   for p in k.list("v1", "Pod", namespace))


def test_claim_that_never_binds(k, kube, namespace, run_operator) -> None:
    """A StorageClass whose provisioner nobody runs: the claims stay Pending."""
    kube.kubectl("apply", "-f", "-", stdin=(
        '{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "unserved"},'
        ' "provisioner": "example.com/nobody-runs-this"}'))
    run_operator()
    apply(k, *_cluster_with_storage(namespace, {"size": "1Gi", "storageClassName": "unserved"}))
    spool = wait_until(lambda: (s := _conditions(k, namespace)[0]).get("reason") == "VolumeNotBound" and s,
                       60, "SpoolPersistent=False, VolumeNotBound")
    assert "spool-main-mta-0" in spool["message"]
    wait_until(lambda: _conditions(k, namespace)[1].get("reason") == "VolumeNotBound", 30, "Ready says why")
