"""CRAM-MD5 from manifests to a real SMTP login: `mta-operator local` renders the Cluster and SmtpCredentials
with the operator's code, the real relay serves them, smtplib logs in with CRAM-MD5."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from localkit import (
    Served,
    cluster,
    credential,
    domain,
    generated_passwords,
    secret,
    serving,
    write_manifests,
)

BYO_PASSWORD = "Crm-Own-Password-" + "k" * 15


def _cram_login(served: Served, user: str, password: str) -> smtplib.SMTP:
    client = served.connect()
    client.user, client.password = user, password
    client.auth("CRAM-MD5", client.auth_cram_md5)  # raises SMTPAuthenticationError unless 235
    return client


def _refused(served: Served, user: str, password: str) -> int:
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        _cram_login(served, user, password)
    return refused.value.smtp_code


def test_cram_md5_login_for_credentials_that_opt_in(tmp_path: Path) -> None:
    manifests = write_manifests(
        tmp_path / "manifests",
        cluster(smtp={"ports": [587], "authMechanisms": ["PLAIN", "LOGIN", "CRAM-MD5"]}), domain(),
        credential("legacy", cramMd5=True),  # generated password
        secret("crm-password", password=BYO_PASSWORD),
        credential("crm", cramMd5=True, passwordSecretRef={"name": "crm-password", "key": "password"}),
        credential("plain"))  # does not opt in
    with serving(manifests, tmp_path / "state") as served:
        shown = generated_passwords(served.header)
        client = _cram_login(served, "legacy", shown["legacy"])
        assert "CRAM-MD5" in client.esmtp_features["auth"]
        assert client.mail("app@example.com")[0] == 250
        assert client.rcpt("someone@example.net")[0] == 250
        client.quit()
        _cram_login(served, "crm", BYO_PASSWORD).quit()
        assert _refused(served, "legacy", shown["legacy"][:-1] + "x") == 535
        # Right password, but this credential's entry holds no CRAM-MD5 secret: refused; PLAIN still works.
        assert _refused(served, "plain", shown["plain"]) == 535
        plain = served.connect()
        plain.login("plain", shown["plain"])
        plain.quit()
    relay_yaml = (tmp_path / "state" / "config" / "relay.yaml").read_text()
    shards = "".join(p.read_text() for p in (tmp_path / "state" / "config" / "credentials").iterdir())
    log = served.log.read_text()
    for password in (shown["legacy"], BYO_PASSWORD):
        assert password not in relay_yaml  # the settings (a ConfigMap in a cluster) never hold it
        assert password in shards  # the credential files (Secrets in a cluster) do, for CRAM-MD5 only
        assert password not in log
    assert shown["plain"] not in shards


def test_cram_md5_asked_for_on_a_cluster_that_does_not_offer_it(tmp_path: Path) -> None:
    manifests = write_manifests(tmp_path / "manifests", cluster(), domain(),
                                credential("legacy", cramMd5=True))
    with serving(manifests, tmp_path / "state") as served:
        assert "CramMd5NotOffered" in served.header
        password = generated_passwords(served.header)["legacy"]
        client = served.connect()
        assert "CRAM-MD5" not in client.esmtp_features["auth"]
        client.quit()
        assert _refused(served, "legacy", password) in {504, 535}
        served.connect().login("legacy", password)  # still served, with PLAIN and LOGIN
    shards = "".join(p.read_text() for p in (tmp_path / "state" / "config" / "credentials").iterdir())
    assert password not in shards
