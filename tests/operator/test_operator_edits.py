"""Edits and deletes: table and settings changes never roll the MTAs (the watcher carries them), pod
settings do; a later SendingDomain reaches the relay settings; deletes remove table entries and
garbage-collect; user Secrets survive; a username claimed twice is served once."""

from __future__ import annotations

from typing import Any

import pytest
from opkit import apply, condition, cr, examples, patch_spec, table
from support.waiting import wait_until

pytestmark = pytest.mark.testbed


def _ready(k, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return wait_until(lambda: (o := cr(k, kind, namespace, name)) and
                      condition(o, "Ready").get("status") == "True" and o, 60, f"{kind} {name} Ready")


def _template(k, namespace: str) -> dict[str, Any]:
    return k.get("apps/v1", "StatefulSet", namespace, "main-mta")["spec"]["template"]


def _settings(k, namespace: str) -> str:
    return k.get("v1", "ConfigMap", namespace, "main-mta-settings")["data"]["relay.yaml"]


def test_operator_edits_roll_only_for_pod_settings(k, namespace, run_operator) -> None:
    run_operator()
    apply(k, *examples(namespace))
    _ready(k, namespace, "Cluster", "main")
    _ready(k, namespace, "SmtpCredential", "newsletter")
    before = _template(k, namespace)

    # allowedIPs: the table changes, the pods do not.
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
    wait_until(lambda: "later.example.net" in _settings(k, namespace), 20, "new domain in the relay settings")
    assert table(k, namespace, "main")["newsletter@example.com"]["domains"] == {"mode": "AllClusterDomains"}

    # mtas: scales; the pod template does not change (the MTAs find each other for quotas by themselves).
    patch_spec(k, "Cluster", namespace, "main", {"mtas": 4})
    wait_until(lambda: k.get("apps/v1", "StatefulSet", namespace, "main-mta")["spec"]["replicas"] == 4,
               20, "4 replicas")
    # Settings the relay applies in place: no new template either.
    patch_spec(k, "Cluster", namespace, "main", {"smtp": {"maxMessageSize": 10485760},
                                                  "rateLimit": {"messages": 60, "period": "Minute"}})
    wait_until(lambda: "maxMessageSize: 10485760" in _settings(k, namespace), 20, "settings change")
    assert _template(k, namespace) == before
    # Pod settings do roll the pods.
    patch_spec(k, "Cluster", namespace, "main", {"pod": {"resources": {"limits": {"memory": "640Mi"}}}})
    wait_until(lambda: _template(k, namespace) != before, 20, "template change")


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
    gone = (("StatefulSet", "main-mta"), ("Service", "main-mta"), ("Secret", "main-mta-credentials"))
    for kind, name in gone:
        api = "apps/v1" if kind == "StatefulSet" else "v1"
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
