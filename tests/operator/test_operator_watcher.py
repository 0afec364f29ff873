"""The relay's side of the credential table: the config watcher (``python -m mta_relay.config_watcher``),
running with the relay's own ServiceAccount token, follows the operator's table; a real ``mta-relay`` reading
that directory accepts a credential's password, and refuses it once the SmtpCredential is deleted."""

from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import config
from mta_operator.kube.client import ApiError, KubeClient
from opkit import apply, condition, cr, decoded, examples
from support.ports import free_port
from support.tls import make_ca, write_server_cert
from support.waiting import wait_until

pytestmark = pytest.mark.testbed


def _token_kubeconfig(kube, namespace: str, path: Path) -> Path:
    """A kubeconfig that acts as the relay pod's ServiceAccount (least privilege under test)."""
    # The ServiceAccount comes with the Cluster's reconcile, which may still be under way.
    token = wait_until(lambda: kube.kubectl("create", "token", "main-mta", "-n", namespace).stdout.strip(),
                       30, "a token for the MTAs' ServiceAccount")
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "relay",
        "clusters": [{"name": "bed", "cluster": cluster}],
        "users": [{"name": "relay", "user": {"token": token}}],
        "contexts": [{"name": "relay", "context": {"cluster": "bed", "user": "relay"}}]}))
    return path


def _relay_config(settings_yaml: str, tmp: Path, creds: Path, smtp_port: int) -> Path:
    """The operator's relay.yaml with pod paths and ports swapped for local ones."""
    ca = make_ca()
    cert, key = write_server_cert(ca, tmp / "tls", ("smtp.example.com", "127.0.0.1"))
    settings = yaml.safe_load(settings_yaml)
    settings.update({"smtpListeners": [{"port": smtp_port, "address": "127.0.0.1"}],
                     "http": {"enabled": True, "port": free_port(), "address": "127.0.0.1"},
                     "tls": {"certFile": str(cert), "keyFile": str(key)}, "credentialsDir": str(creds),
                     "queue": {"path": str(tmp / "spool")},
                     "domains": [{"domain": d["domain"]} for d in settings["domains"]]})
    (tmp / "config").mkdir()
    (tmp / "config" / "relay.yaml").write_text(yaml.safe_dump(settings))
    (tmp / "ca.pem").write_bytes(ca.cert_pem.bytes())
    return tmp / "config"


def _auth(port: int, ca_file: Path, user: str, password: str) -> int:
    import ssl

    try:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
    except ConnectionRefusedError:
        return 0  # not listening yet
    with smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(ca_file)))
        try:
            code, _ = smtp.login(user, password)
        except smtplib.SMTPAuthenticationError as error:
            return error.smtp_code
        return code


def test_operator_watcher_feeds_a_real_relay(k, kube, namespace, run_operator, tmp_path: Path) -> None:
    run_operator()
    apply(k, *examples(namespace))
    wait_until(lambda: condition(cr(k, "SmtpCredential", namespace, "billing"), "Ready").get("status") ==
               "True", 60, "billing Ready")
    relay_kubeconfig = _token_kubeconfig(kube, namespace, tmp_path / "relay.kubeconfig")

    # Least privilege: the relay's token reads the table, and nothing else.
    as_relay = KubeClient(config.new_client_from_config(config_file=str(relay_kubeconfig)))

    def reads_table() -> bool:  # RBAC and token caches in the API server are eventually consistent
        try:
            return as_relay.get("v1", "Secret", namespace, "main-mta-credentials") is not None
        except ApiError:
            return False

    wait_until(reads_table, 10, "the relay's token reads the table")
    with pytest.raises(ApiError, match="403"):
        as_relay.get("v1", "Secret", namespace, "billing-smtp")

    creds = tmp_path / "credentials"
    watcher = subprocess.Popen([sys.executable, "-m", "mta_relay.config_watcher", "--kubeconfig",
                                str(relay_kubeconfig), "--namespace", namespace,
                                "--manifest", "main-mta-credentials", "--dir", str(creds)],
                               stdout=(tmp_path / "watcher.log").open("wb"), stderr=subprocess.STDOUT)
    port = free_port()
    settings = k.get("v1", "ConfigMap", namespace, "main-mta-settings")["data"]["relay.yaml"]
    config_dir = _relay_config(settings, tmp_path, creds, port)
    relay = None
    try:
        wait_until(lambda: (creds / "..data" / "credentials-000.json").exists(), 20, "first table")
        relay = subprocess.Popen([sys.executable, "-c", "from mta_relay.cli import main; main()",
                                  "--config", str(config_dir)],
                                 stdout=(tmp_path / "relay.log").open("wb"), stderr=subprocess.STDOUT)
        password = decoded(k.get("v1", "Secret", namespace, "billing-smtp"))["password"]
        ca_file = tmp_path / "ca.pem"
        wait_until(lambda: _auth(port, ca_file, "billing", password) == 235, 20, "AUTH accepted")
        wrong = password[:-1] + ("x" if password[-1] != "x" else "y")
        assert _auth(port, ca_file, "billing", wrong) == 535

        kube.kubectl("delete", "smtpcredential", "billing", "-n", namespace)
        wait_until(lambda: _auth(port, ca_file, "billing", password) == 535, 10, "AUTH refused after delete")
        assert "credentials" not in (tmp_path / "watcher.log").read_text().lower().replace(
            "credential table", "")  # names and digests only
    finally:
        for proc in (relay, watcher):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
