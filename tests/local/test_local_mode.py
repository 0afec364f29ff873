"""`mta-operator local -f DIR`: the examples rendered with the operator's code and served by the relay."""

from __future__ import annotations

import json
import shutil
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mta_relay.config_loader import load as load_config
from mta_relay.passwords import verify_fast
from support.ports import free_port
from support.receiver_thread import ThreadedReceiver
from support.tls import make_ca, write_ca_file

ROOT = Path(__file__).resolve().parents[2]
CLI = [str(Path(sys.executable).parent / "mta-operator")]


def _local(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "local", *args], capture_output=True, text=True, timeout=120,
                          check=check)


def _passwords(stdout: str) -> dict[str, str]:
    lines = stdout.split("Generated passwords", 1)[-1].split("DNS records", 1)[0].splitlines()[1:]
    return dict(line.strip().split(": ", 1) for line in lines if ": " in line)


def test_examples_render_to_a_config_the_relay_loads_and_passwords_show_once(tmp_path):
    state = tmp_path / "state"
    first = _local("-f", str(ROOT / "examples"), "--state-dir", str(state), "--render-only")
    shown = _passwords(first.stdout)
    assert set(shown) == {"billing", "helpdesk", "newsletter@example.com"}
    assert all(len(p) == 32 for p in shown.values())
    assert "mta2025._domainkey.example.com TXT v=DKIM1; k=rsa; p=" in first.stdout

    config = load_config(state / "config")
    users = {c.username for c in config.credentials}
    assert {"billing", "helpdesk", "newsletter@example.com"} <= users
    for cred in config.credentials:  # verifiers only, never the password itself
        if cred.username in shown:
            assert cred.password_verifier
            assert shown[cred.username] not in cred.password_verifier
    assert (state / "passwords.json").stat().st_mode & 0o077 == 0
    assert (state / "tls" / "tls.key").stat().st_mode & 0o077 == 0

    again = _local("-f", str(ROOT / "examples"), "--state-dir", str(state), "--render-only")
    assert "Generated passwords" not in again.stdout  # printed once, when generated
    for password in shown.values():
        assert password not in again.stdout
    rerendered = {c.username: c for c in load_config(state / "config").credentials}
    assert set(rerendered) == users
    for user, password in shown.items():  # the kept passwords still verify
        assert verify_fast(rerendered[user].password_verifier or "", password.encode())


def test_bad_manifest_is_refused_with_the_file_and_field(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "manifests")
    bad = {"apiVersion": "mta-operator.io/v1alpha1", "kind": "SmtpCredential",
           "metadata": {"name": "broken", "namespace": "mail"},
           "spec": {"clusterRef": {"name": "main"}, "username": "has space",
                    "domains": {"mode": "AnyDomain"}}}
    (tmp_path / "manifests" / "99-bad.yaml").write_text(yaml.safe_dump(bad))
    out = _local("-f", str(tmp_path / "manifests"), "--state-dir", str(tmp_path / "state"),
                 "--render-only", check=False)
    assert out.returncode == 2
    assert "99-bad.yaml" in out.stderr
    assert "spec.username" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "state" / "config").exists()


def _manifests(directory: Path, smarthost_port: int) -> None:
    """The examples, with delivery to a local smarthost instead of MX (no traffic leaves loopback)."""
    shutil.copytree(ROOT / "examples", directory)
    cluster_file = directory / "10-cluster.yaml"
    docs = list(yaml.safe_load_all(cluster_file.read_text()))
    for doc in docs:
        if doc and doc.get("kind") == "Cluster":
            doc["spec"]["delivery"] = {"mode": "Smarthost", "smarthost": {
                "host": "127.0.0.1", "port": smarthost_port, "tls": "Required"}}
    cluster_file.write_text(yaml.safe_dump_all(docs))


def test_local_mode_serves_submission_and_delivers(tmp_path):
    ca = make_ca()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = write_ca_file(ca, tmp_path / "smarthost-ca.pem")
    port = free_port()
    with ThreadedReceiver(tls=server_ctx, require_tls=True) as receiver:
        _manifests(tmp_path / "manifests", receiver.port)
        state = tmp_path / "state"
        proc = subprocess.Popen(
            [*CLI, "local", "-f", str(tmp_path / "manifests"), "--state-dir", str(state),
             "--port", f"587={port}", "--http-port", str(free_port())],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": str(ca_file)})
        try:
            header = _read_until(proc, "DNS records to publish")
            password = _passwords(header)["billing"]  # Specific: example.com
            tls = ssl.create_default_context(cafile=str(state / "tls" / "ca.crt"))
            client = _connect(port, tls)
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login("billing", "not-the-password")
            assert refused.value.smtp_code == 535
            client.login("billing", password)
            client.sendmail("invoices@example.com", ["customer@example.net"],
                            b"From: invoices@example.com\r\nTo: customer@example.net\r\n"
                            b"Subject: local mode\r\n\r\nhello from local mode\r\n")
            client.quit()
            deadline = time.monotonic() + 30
            while not receiver.transactions and time.monotonic() < deadline:
                time.sleep(0.2)
            (delivered,) = receiver.transactions
            assert delivered.rcpt_tos == ("customer@example.net",)
            assert b"hello from local mode" in delivered.data
            assert b"DKIM-Signature:" in delivered.data  # signed with the key the state dir keeps
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert password not in err
        assert all(json.loads(line) for line in err.splitlines() if line.startswith("{"))


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError("local mode exited early: " + "".join(seen) + (proc.stderr.read() if proc.stderr
                                                                         else ""))


def _connect(port: int, tls: ssl.SSLContext) -> smtplib.SMTP:
    deadline = time.monotonic() + 30
    while True:
        try:
            client = smtplib.SMTP("127.0.0.1", port, timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    client.ehlo("app.example.com")
    client._host = "smtp.example.com"  # verify the certificate against the Cluster's hostname
    client.starttls(context=tls)
    return client
