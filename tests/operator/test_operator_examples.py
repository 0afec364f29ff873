"""`examples/` applied to the test bed with the operator running: every child exists with the right content
and owner, status and printer columns are right, pods are Ready and in the headless Service's
EndpointSlices, and the credential table serves every example credential with the right verifier."""

from __future__ import annotations

import json

import pytest
from mta_relay.passwords import verify_fast
from opkit import apply, condition, cr, decoded, examples, table
from support.waiting import wait_until

pytestmark = pytest.mark.testbed

CHILDREN = [("v1", "ServiceAccount", "main-mta"), ("rbac.authorization.k8s.io/v1", "Role", "main-mta"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding", "main-mta"),
            ("v1", "ConfigMap", "main-mta-settings"), ("v1", "Secret", "main-mta-dkim"),
            ("v1", "Secret", "main-mta-tls"), ("v1", "Secret", "main-mta-ca"),
            ("v1", "Service", "main-mta"), ("v1", "Service", "main-mta-pods"),
            ("apps/v1", "StatefulSet", "main-mta"), ("policy/v1", "PodDisruptionBudget", "main-mta"),
            ("v1", "Secret", "main-mta-peer"),
            ("v1", "Secret", "main-mta-credentials"), ("v1", "Secret", "main-mta-credentials-000")]


def test_operator_examples_converge(k, kube, namespace, run_operator) -> None:
    run_operator()
    apply(k, *examples(namespace))
    cluster = wait_until(lambda: (c := cr(k, "Cluster", namespace, "main")) and
                         condition(c, "Ready").get("status") == "True" and c, 60, "Cluster Ready")
    uid = cluster["metadata"]["uid"]
    for api_version, kind, name in CHILDREN:
        obj = k.get(api_version, kind, namespace, name)
        assert obj is not None, f"{kind} {name} missing"
        owners = obj["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [("Cluster", uid, True)]

    status = cluster["status"]
    assert status["observedGeneration"] == cluster["metadata"]["generation"]
    assert status["mtas"] == {"desired": 3, "ready": 3, "summary": "3/3"}
    assert status["connection"]["smtpHost"] == "smtp.example.com"
    assert status["connection"]["smtpPorts"] == [25, 587, 2587]
    assert status["sendingDomains"] == 2
    assert status["smtpCredentials"] == 5
    assert condition(cluster, "TlsReady")["reason"] == "OperatorCA"

    columns = kube.kubectl("get", "mtacluster", "-n", namespace, "--no-headers").stdout.split()
    assert columns[:4] == ["main", "smtp.example.com", "3/3", "True"]

    # Pods Ready on the fake nodes, listed by the headless Service (the DNS rotation).
    def endpoints() -> list[dict]:
        slices = kube.kubectl("get", "endpointslices", "-n", namespace, "-l",
                              "kubernetes.io/service-name=main-mta-pods", "-o", "json").stdout
        eps = [e for s in json.loads(slices)["items"] for e in s.get("endpoints") or []]
        return eps if len([e for e in eps if e["conditions"].get("ready")]) == 3 else []

    eps = wait_until(endpoints, 30, "3 ready endpoints")
    assert all(e["addresses"][0].startswith("198.18.") for e in eps)

    sts = k.get("apps/v1", "StatefulSet", namespace, "main-mta")
    assert "secret/main-mta-tls=tls" in sts["spec"]["template"]["spec"]["initContainers"][0]["command"]
    claims = {c["metadata"]["name"]: c["status"]["phase"]
              for c in k.list("v1", "PersistentVolumeClaim", namespace)}
    assert claims == {f"spool-main-mta-{i}": "Bound" for i in range(3)}
    assert condition(cluster, "SpoolPersistent")["reason"] == "VolumePerMta"

    creds = {c: wait_until(lambda c=c: (o := cr(k, "SmtpCredential", namespace, c)) and
                           condition(o, "Ready").get("status") == "True" and o, 30, f"{c} Ready")
             for c in ("billing", "newsletter", "helpdesk", "scanner-3rd-floor", "crm")}
    assert creds["newsletter"]["status"]["summary"] == "Cluster domains, 2 IPs"
    assert creds["billing"]["status"]["connectionSecretName"] == "billing-smtp"
    cols = kube.kubectl("get", "smtpcred", "newsletter", "-n", namespace, "--no-headers").stdout.split()
    assert cols[:6] == ["newsletter", "newsletter@example.com", "main", "Cluster", "domains,", "2"]

    entries = table(k, namespace, "main")
    assert set(entries) == {"billing", "newsletter@example.com", "helpdesk", "scanner-3rd-floor",
                            "crm+mailer@example.com"}
    billing = decoded(k.get("v1", "Secret", namespace, "billing-smtp"))
    assert len(billing["password"]) == 32
    assert billing["host"] == "smtp.example.com"
    assert billing["port"] == "587"
    assert verify_fast(entries["billing"]["passwordVerifier"], billing["password"].encode())
    assert entries["billing"]["quota"] == {"messages": 10000}  # period default Day omitted
    assert entries["scanner-3rd-floor"]["authentication"] == "SourceIP"
    assert "passwordVerifier" not in entries["scanner-3rd-floor"]
    assert "password" not in decoded(k.get("v1", "Secret", namespace, "scanner-3rd-floor-smtp"))
    # Bring your own: argon2id of the user's password; the user's password is not copied anywhere.
    from argon2 import PasswordHasher

    assert PasswordHasher().verify(entries["crm+mailer@example.com"]["passwordVerifier"],
                                   "replace-me-with-a-long-random-password")
    assert "password" not in decoded(k.get("v1", "Secret", namespace, "crm-smtp"))

    settings = k.get("v1", "ConfigMap", namespace, "main-mta-settings")
    assert settings is not None
    assert "notify.example.org" in settings["data"]["relay.yaml"]
    dkim = decoded(k.get("v1", "Secret", namespace, "main-mta-dkim"))
    assert set(dkim) == {"example.com.pem", "notify.example.org.pem"}
    domain = cr(k, "SendingDomain", namespace, "example-com")
    assert domain is not None
    assert {r["purpose"] for r in domain["status"]["dnsRecords"]} == {"DKIM", "SPF", "DMARC", "Ownership"}


def test_operator_cert_manager_missing_is_a_clear_condition(k, namespace, run_operator) -> None:
    run_operator()
    apply(k, *[d for d in examples(namespace, managed_tls=False) if d["kind"] == "Cluster"])
    cluster = wait_until(lambda: (c := cr(k, "Cluster", namespace, "main")) and
                         condition(c, "TlsReady").get("status") == "False" and c, 30, "TlsReady=False")
    assert condition(cluster, "TlsReady")["reason"] == "CertManagerNotInstalled"
    assert condition(cluster, "Ready")["status"] == "False"
    assert "install cert-manager" in condition(cluster, "Ready")["message"]
