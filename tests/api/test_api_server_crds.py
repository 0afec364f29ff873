"""The CRDs on a real API server: examples apply; kubectl get/explain/scale; status subresource; defaults."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from api_cases import cluster
from api_kube import EXAMPLES, FIELD_MANAGER, apply, get
from mta_operator.api import KINDS

pytestmark = pytest.mark.testbed
BY_KIND = {kind.crd.kind: kind for kind in KINDS}
NS = "mail"  # the namespace of examples/


@pytest.fixture(scope="module")
def examples(mta_crds: Any) -> Iterator[Any]:
    result = mta_crds.kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
                              "-f", str(EXAMPLES), check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr  # no unknown or pruned fields in the examples
    yield mta_crds
    # Waits for the namespace to go, so that a second run against the same cluster starts clean.
    mta_crds.kubectl("delete", "-f", str(EXAMPLES), "--ignore-not-found", "--timeout=90s", check=False,
                     timeout=120)


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] in BY_KIND]
    return docs


def test_examples_are_stored_with_the_defaults_the_models_apply(examples: Any) -> None:
    for doc in _documents():
        stored = get(examples, NS, doc["kind"], doc["metadata"]["name"])
        model = BY_KIND[doc["kind"]].model_validate(doc)
        assert BY_KIND[doc["kind"]].model_validate(stored).spec == model.spec, doc["metadata"]["name"]


def test_kubectl_get_mta_lists_every_kind_with_its_columns(examples: Any) -> None:
    out = examples.kubectl("get", "mta", "-n", NS).stdout
    headers = ("HOSTNAME", "MTAS", "DOMAIN", "VERIFIED", "USERNAME", "CLUSTER", "SUMMARY", "READY", "AGE")
    for header in headers:
        assert header in out, out
    for name in ("cluster.mta-operator.io/main", "sendingdomain.mta-operator.io/example-com",
                 "smtpcredential.mta-operator.io/billing", "smtpcredential.mta-operator.io/crm"):
        assert name in out, out
    wide = examples.kubectl("get", "smtpcred", "-n", NS, "-o", "wide").stdout
    assert "AUTH" in wide
    assert "MESSAGE" in wide
    assert "SourceIP" in wide


def test_status_subresource_feeds_the_columns_and_prunes_unknown_fields(examples: Any) -> None:
    status = {"observedGeneration": 1, "mtas": {"desired": 3, "ready": 2, "summary": "2/3"},
              "conditions": [{"type": "Ready", "status": "False", "reason": "MTAsStarting",
                              "message": "2 of 3 MTAs ready", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
              "kopf": {"progress": {}}}
    patched = examples.kubectl("patch", "mtacluster", "main", "-n", NS, "--subresource=status",
                               "--type=merge", "-p", json.dumps({"status": status}))
    # kopf's default state in status would be pruned: why the operator keeps it in annotations.
    assert 'unknown field "status.kopf"' in patched.stderr
    row = examples.kubectl("get", "mtacluster", "main", "-n", NS, "-o", "wide", "--no-headers").stdout.split()
    assert row[:4] == ["main", "smtp.example.com", "2/3", "False"], row
    assert "2 of 3 MTAs ready" in " ".join(row)
    assert "kopf" not in get(examples, NS, "Cluster", "main")["status"]


def test_status_condition_shape_is_enforced(examples: Any) -> None:
    bad = {"status": {"conditions": [{"type": "Ready", "status": "Maybe", "reason": "X",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    result = examples.kubectl("patch", "sdomain", "example-com", "-n", NS, "--subresource=status",
                              "--type=merge", "-p", json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "status.conditions[0].status" in result.stderr


def test_scale_subresource_sets_the_number_of_mtas(mta_crds: Any, api_namespace: str) -> None:
    created = apply(mta_crds, api_namespace, cluster("scaled", mtas=2))
    assert created.returncode == 0, created.stderr
    mta_crds.kubectl("scale", "mtacluster", "scaled", "-n", api_namespace, "--replicas=4")
    assert get(mta_crds, api_namespace, "Cluster", "scaled")["spec"]["mtas"] == 4


def test_credentials_are_selectable_by_cluster(examples: Any) -> None:
    out = examples.kubectl("get", "smtpcred", "-n", NS, "--field-selector", "spec.clusterRef.name=main",
                           "-o", "name").stdout.split()
    assert len(out) == 5
    assert examples.kubectl("get", "sdomain", "-n", NS, "--field-selector", "spec.clusterRef.name=other",
                            "-o", "name").stdout == ""


def _explain(kube: Any, field: str) -> str:
    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    deadline = time.monotonic() + 30
    while True:
        result = kube.kubectl("explain", field, check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result.stdout + result.stderr
        time.sleep(0.5)


def test_kubectl_explain_allowed_ips_is_useful(mta_crds: Any) -> None:
    text = " ".join(_explain(mta_crds, "smtpcredential.spec.allowedIPs").split())
    assert "FIELD: allowedIPs <[]string>" in text, text
    for phrase in ("IPv4 or IPv6 addresses and CIDRs", "2001:db8::/32", "Empty: any address",
                   "0.0.0.0/0 and ::/0 are refused", "535 5.7.8 IP not authorized"):
        assert phrase in text, text


@pytest.mark.parametrize("field", ["cluster.spec.delivery.mode", "sendingdomain.spec.dkim",
                                   "smtpcredential.spec.domains.mode", "mtacluster.status.conditions"])
def test_kubectl_explain_describes_fields(mta_crds: Any, field: str) -> None:
    text = _explain(mta_crds, field)
    assert "DESCRIPTION:" in text, text
    assert "<empty>" not in text.split("DESCRIPTION:")[1].split("FIELDS:")[0], text
