"""CRAM-MD5 end to end on the test bed: SmtpCredentials that opt in (spec.cramMd5) on a Cluster that offers
it → the operator's credential table → the watcher → a real ``mta-relay`` pod → a CRAM-MD5 login over
STARTTLS to the pod. The password that CRAM-MD5 needs lives in the table's Secrets and nowhere else."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl

import aiosmtplib
import pytest
from e2ekit import CLUSTER, HOSTNAME, auth_code
from mta_operator import naming
from mta_relay.shards import manifest_secret
from support.waiting import wait_until

pytestmark = pytest.mark.testbed

BYO_PASSWORD = "Crm-Own-Password-" + "e" * 15


async def _cram(ip: str, port: int, tls: ssl.SSLContext, username: str, password: str) -> tuple[int, bool]:
    """(reply to AUTH CRAM-MD5, whether CRAM-MD5 was advertised) on one MTA."""
    smtp = aiosmtplib.SMTP(hostname=ip, port=port, start_tls=False, timeout=15,
                           local_hostname="client.e2e.test")
    await smtp.connect()
    try:
        await smtp.ehlo()
        await smtp.starttls(server_hostname=HOSTNAME, tls_context=tls)
        await smtp.ehlo()
        advertised = "CRAM-MD5" in {m.upper() for m in smtp.server_auth_methods}
        try:
            return (await smtp.auth_crammd5(username, password)).code, advertised
        except aiosmtplib.SMTPResponseException as error:
            return error.code, advertised
    finally:
        smtp.close()


def cram(chain, username: str, password: str) -> tuple[int, bool]:
    [ip] = chain.addresses()
    return asyncio.run(_cram(ip, chain.port(587), chain.tls, username, password))


def _credential(chain, name: str, **spec) -> dict:
    return {"apiVersion": "mta-operator.io/v1alpha1", "kind": "SmtpCredential",
            "metadata": {"name": name, "namespace": chain.namespace},
            "spec": {"clusterRef": {"name": CLUSTER},
                     "domains": {"mode": "Specific", "names": ["example.com"]}, **spec}}


def _mechanisms(chain, mechanisms: list[str]) -> None:
    chain.kubectl("patch", f"mtacluster/{CLUSTER}", "--type", "merge",
                  "-p", json.dumps({"spec": {"smtp": {"authMechanisms": mechanisms}}}))


def _ready(chain, name: str) -> dict:
    conditions = chain.get("smtpcredential", name).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "Ready"), {})


def _table_text(chain) -> str:
    """Every shard of the Cluster's credential table, decoded."""
    secrets = json.loads(chain.kubectl("get", "secrets", "-l", f"mta-operator.io/cluster={CLUSTER}",
                                       "-o", "json").stdout)["items"]
    return "".join(base64.b64decode(v).decode(errors="replace") for s in secrets
                   if s["metadata"]["name"].startswith(manifest_secret(CLUSTER))
                   for v in (s.get("data") or {}).values())


def test_cram_md5_login_through_the_operator(chain):
    _mechanisms(chain, ["PLAIN", "LOGIN", "CRAM-MD5"])
    chain.apply(
        _credential(chain, "legacy", cramMd5=True),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "crm-cram", "namespace": chain.namespace},
         "type": "Opaque", "stringData": {"password": BYO_PASSWORD}},
        _credential(chain, "crm-cram", cramMd5=True,
                    passwordSecretRef={"name": "crm-cram", "key": "password"}),
        _credential(chain, "no-cram"))
    legacy, no_cram = chain.connection("legacy")["password"], chain.connection("no-cram")["password"]
    for name in ("legacy", "crm-cram", "no-cram"):
        wait_until(lambda name=name: _ready(chain, name).get("status") == "True", what=f"{name} Ready")

    assert wait_until(lambda: cram(chain, "legacy", legacy)[0] == 235 or None,
                      what="CRAM-MD5 login of legacy accepted by the MTA pod")
    assert wait_until(lambda: cram(chain, "crm-cram", BYO_PASSWORD)[0] == 235 or None,
                      what="CRAM-MD5 login with a password of one's own")
    assert cram(chain, "legacy", legacy[:-1] + ("x" if legacy[-1] != "x" else "y"))[0] == 535
    assert cram(chain, "no-cram", no_cram) == (535, True)  # right password, no opt-in
    [ip] = chain.addresses()
    assert auth_code(ip, chain.port(587), chain.tls, "no-cram", no_cram) == 235

    # The password CRAM-MD5 needs is in the table's Secrets, and in none of status, annotations, Events,
    # the settings ConfigMap or the operator's log.
    table = _table_text(chain)
    assert legacy in table
    assert BYO_PASSWORD in table
    assert no_cram not in table
    public = json.dumps([chain.get("smtpcredential", n) for n in ("legacy", "crm-cram")]) + \
        chain.kubectl("get", "events", "-o", "json").stdout + \
        json.dumps(chain.get("configmap", naming.settings(CLUSTER)))
    for secret in (legacy, BYO_PASSWORD):
        assert secret not in public
        assert secret not in chain.operator.log_path.read_text(errors="replace")

    # The Cluster stops offering CRAM-MD5: the credential says so, keeps PLAIN/LOGIN, and the password
    # leaves the table.
    _mechanisms(chain, ["PLAIN", "LOGIN"])
    wait_until(lambda: _ready(chain, "legacy").get("reason") == "CramMd5NotOffered",
               what="legacy Ready=False, CramMd5NotOffered")
    assert _ready(chain, "legacy")["status"] == "False"
    wait_until(lambda: cram(chain, "legacy", legacy)[0] != 235 or None,
               what="CRAM-MD5 refused once the Cluster stops offering it")
    # Each credential's entry changes in its own reconcile: once neither has CRAM-MD5, it is not advertised.
    wait_until(lambda: not cram(chain, "legacy", legacy)[1], what="CRAM-MD5 no longer advertised")
    assert auth_code(ip, chain.port(587), chain.tls, "legacy", legacy) == 235
    assert legacy not in _table_text(chain)
