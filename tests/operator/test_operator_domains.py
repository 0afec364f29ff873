"""SendingDomain: the DKIM key is generated once and never replaced; the DNS records in status are checked
against a real (loopback) DNS server: Verified=True when published, False with a clear message when not."""

from __future__ import annotations

import pytest
from opkit import apply, condition, cr, decoded, examples, patch_spec
from support.waiting import wait_until

pytestmark = pytest.mark.testbed


def test_operator_dkim_verified_against_dns(k, kube, namespace, run_operator, dns_server) -> None:
    run_operator("--dns-nameserver", f"{dns_server.address}:{dns_server.port}", "--dns-check-seconds", "1")
    apply(k, *[d for d in examples(namespace) if d["kind"] in {"Cluster", "SendingDomain"}])
    domain = wait_until(lambda: (o := cr(k, "SendingDomain", namespace, "example-com")) and
                        o.get("status", {}).get("dnsRecords") and
                        condition(o, "Verified").get("status") == "False" and o, 30, "records, not verified")
    missing = condition(domain, "Verified")
    assert missing["reason"] == "RecordsMissing"
    assert "DKIM TXT at mta2025._domainkey.example.com is missing" in missing["message"]
    key_before = decoded(k.get("v1", "Secret", namespace, "example-com-dkim-key"))["private.pem"]

    records = {r["purpose"]: r for r in domain["status"]["dnsRecords"]}
    for record in records.values():
        value = record["value"]  # TXT character-strings hold at most 255 bytes: split long keys
        chunks = [f'"{value[i:i + 250]}"' for i in range(0, len(value), 250)]
        dns_server.add(record["name"], "TXT", " ".join(chunks))
    verified = wait_until(lambda: (o := cr(k, "SendingDomain", namespace, "example-com")) and
                          condition(o, "Verified").get("status") == "True" and o, 20, "Verified=True")
    assert all(r["verified"] for r in verified["status"]["dnsRecords"])

    # A wrong DKIM key published: Verified=False, and the message says which record and why.
    dkim = records["DKIM"]
    dns_server.clear(dkim["name"])
    dns_server.add(dkim["name"], "TXT", '"v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AwrongKey"')
    wrong = wait_until(lambda: (o := cr(k, "SendingDomain", namespace, "example-com")) and
                       condition(o, "Verified").get("status") == "False" and o, 20, "Verified=False")
    assert condition(wrong, "Verified")["message"] == (
        "DKIM TXT at mta2025._domainkey.example.com does not match the expected value")
    events = kube.kubectl("get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}").stdout
    assert "NotVerified" in events
    assert "Verified" in events.split()

    # Changing the algorithm never silently replaces the published key.
    patch_spec(k, "SendingDomain", namespace, "example-com", {"dkim": {"algorithm": "Ed25519"}})
    mismatch = wait_until(lambda: (o := cr(k, "SendingDomain", namespace, "example-com")) and
                          condition(o, "Ready").get("reason") == "DkimKeyMismatch" and o, 20, "mismatch")
    assert "Delete the Secret" in condition(mismatch, "Ready")["message"]
    assert decoded(k.get("v1", "Secret", namespace, "example-com-dkim-key"))["private.pem"] == key_before
