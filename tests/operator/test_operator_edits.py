"""Edits and deletes: table changes never roll the MTAs, settings changes do; a later SendingDomain reaches
the relay settings; deletes remove table entries and garbage-collect; user Secrets survive; a username
claimed twice is served once."""

from __future__ import annotations

from typing import Any

import pytest
from opkit import apply, condition, cr, examples, patch_spec, table
from support.waiting import wait_until

pytestmark = pytest.mark.testbed


def _ready(k, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return wait_until(lambda: (o := cr(k, kind, namespace, name)) and
                      condition(o, "Ready").get("status") == "True" and o, 60, f"{kind} {name} Ready")


def _template(k, namespace: str) -> tuple[int, str]:
    dep = k.get("apps/v1", "Deployment", namespace, "main-mta")
    return dep["metadata"]["generation"], dep["spec"]["template"]["metadata"]["annotations"][
        "mta-operator.io/settings-hash"]


def test_operator_edits_roll_only_for_settings(k, namespace, run_operator) -> None:
    run_operator()
    apply(k, *examples(namespace))
    _ready(k, namespace, "Cluster", "main")
    _ready(k, namespace, "SmtpCredential", "newsletter")
    before = _template(k, namespace)

    # allowedIPs: the table changes, the Deployment does not.
    patch_spec(k, "SmtpCredential", namespace, "newsletter", {"allowedIPs": ["10.20.0.0/16"]})
    wait_until(lambda: table(k, namespace, "main")["newsletter@example.com"]["allowedIPs"] ==
               ["10.20.0.0/16"], 10, "allowedIPs in the table")
    # domains: likewise.
    patch_spec(k, "SmtpCredential", namespace, "billing",
               {"domains": {"mode": "Specific", "names": ["example.com", "notify.example.org"]}})
    wait_until(lambda: table(k, namespace, "main")["billing"]["domains"]["names"] ==
               ["example.com", "notify.example.org"], 10, "domains in the table")
    # A SendingDomain added later reaches the settings (AllClusterDomains credentials use them).
    apply(k, {"apiVersion": "mta-operator.io/v1alpha1", "kind": "SendingDomain",
              "metadata": {"name": "later", "namespace": namespace},
              "spec": {"clusterRef": {"name": "main"}, "domain": "later.example.net"}})
    wait_until(lambda: "later.example.net" in k.get("v1", "ConfigMap", namespace,
                                                    "main-mta-settings")["data"]["relay.yaml"],
               20, "new domain in the relay settings")
    assert table(k, namespace, "main")["newsletter@example.com"]["domains"] == {"mode": "AllClusterDomains"}
    assert _template(k, namespace) == before

    # mtas: scales (and the quota share in the settings changes, so the pods roll).
    patch_spec(k, "Cluster", namespace, "main", {"mtas": 4})
    wait_until(lambda: k.get("apps/v1", "Deployment", namespace, "main-mta")["spec"]["replicas"] == 4,
               20, "4 replicas")
    after_mtas = _template(k, namespace)
    assert after_mtas[1] != before[1]
    # A settings change rolls the pods.
    patch_spec(k, "Cluster", namespace, "main", {"smtp": {"maxMessageSize": 10485760}})
    wait_until(lambda: _template(k, namespace)[1] not in {before[1], after_mtas[1]}, 20, "template change")
    assert "maxMessageSize: 10485760" in k.get("v1", "ConfigMap", namespace,
                                               "main-mta-settings")["data"]["relay.yaml"]


def test_operator_deletes_and_user_secret_survives(k, kube, namespace, run_operator) -> None:
    run_operator()
    apply(k, *examples(namespace))
    _ready(k, namespace, "SmtpCredential", "billing")
    _ready(k, namespace, "SmtpCredential", "crm")
    assert "billing" in table(k, namespace, "main")

    kube.kubectl("delete", "smtpcredential", "billing", "-n", namespace)
    wait_until(lambda: "billing" not in table(k, namespace, "main"), 5, "billing out of the table")
    wait_until(lambda: k.get("v1", "Secret", namespace, "billing-smtp") is None, 30, "connection Secret GC")

    kube.kubectl("delete", "smtpcredential", "crm", "-n", namespace)
    wait_until(lambda: "crm+mailer@example.com" not in table(k, namespace, "main"), 5, "crm out of the table")

    kube.kubectl("delete", "mtacluster", "main", "-n", namespace)
    gone = (("Deployment", "main-mta"), ("Service", "main-mta"), ("Secret", "main-mta-credentials"))
    for kind, name in gone:
        api = "apps/v1" if kind == "Deployment" else "v1"
        wait_until(lambda api=api, kind=kind, name=name: k.get(api, kind, namespace, name) is None, 30,
                   f"{kind} {name} garbage-collected")
    # The user's password Secret was never ours: it survives everything.
    assert k.get("v1", "Secret", namespace, "crm-smtp-password") is not None


def test_operator_username_conflict(k, namespace, run_operator) -> None:
    run_operator()
    apply(k, *[d for d in examples(namespace) if d["kind"] in {"Cluster", "SendingDomain"}])
    first = {"apiVersion": "mta-operator.io/v1alpha1", "kind": "SmtpCredential",
             "metadata": {"name": "app-a", "namespace": namespace},
             "spec": {"clusterRef": {"name": "main"}, "username": "shared",
                      "domains": {"mode": "AnyDomain"}}}
    apply(k, first)
    _ready(k, namespace, "SmtpCredential", "app-a")
    second = {**first, "metadata": {"name": "app-b", "namespace": namespace}}
    apply(k, second)
    loser = wait_until(lambda: (o := cr(k, "SmtpCredential", namespace, "app-b")) and
                       condition(o, "Ready").get("reason") == "UsernameConflict" and o, 20, "conflict")
    assert condition(loser, "Ready")["status"] == "False"
    assert "app-a" in condition(loser, "Ready")["message"]
    assert list(table(k, namespace, "main")) == ["shared"]
    # The first leaves: the second takes the username over.
    k.delete("mta-operator.io/v1alpha1", "SmtpCredential", namespace, "app-a")
    _ready(k, namespace, "SmtpCredential", "app-b")
    assert list(table(k, namespace, "main")) == ["shared"]
