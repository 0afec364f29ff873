"""End to end through the real `mta-relay` process: swaks, reload with sessions open, a broken config
kept out, graceful SIGTERM, JSON logs, and a canary password that never shows up anywhere."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import RelaySetup
from mta_relay.spool import slot_files
from relaykit import CANARY, PASSWORD, RawSmtp, free_port, https, write_volume

MESSAGE = b"From: app@example.com\r\nTo: r@example.net\r\nSubject: e2e\r\n\r\nhello\r\n"


@dataclass
class RelayProcess:
    proc: subprocess.Popen[bytes]
    smtp: list[int]
    http: int
    log_path: Path
    setup: RelaySetup

    def logs(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def get(self, path: str, tls: ssl.SSLContext) -> tuple[int, bytes]:
        status, _, body = https(self.http, tls, path)
        return status, body


def _wait(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def relay_process(relay_setup: RelaySetup, tls_client: ssl.SSLContext,
                  tmp_path: Path) -> Iterator[RelayProcess]:
    smtp, http = [free_port() for _ in range(3)], free_port()
    relay_setup.settings["smtpListeners"] = [{"port": p, "address": "127.0.0.1", "publicPort": pub}
                                             for p, pub in zip(smtp, (25, 587, 2587), strict=True)]
    relay_setup.settings["http"]["port"] = http
    relay_setup.settings["limits"]["shutdownGraceSeconds"] = 3
    relay_setup.write()
    log_path = tmp_path / "relay.log"
    binary = str(Path(sys.executable).parent / "mta-relay")  # the console script of this venv
    with log_path.open("wb") as log:
        proc = subprocess.Popen([binary, "--config", str(relay_setup.config_dir), "--log-level", "DEBUG"],
                                stdout=log, stderr=subprocess.STDOUT)
    handle = RelayProcess(proc, smtp, http, log_path, relay_setup)
    try:
        _wait(lambda: proc.poll() is not None or _ready(handle, tls_client), what="relay ready")
        assert proc.poll() is None, log_path.read_text()
        yield handle
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _ready(handle: RelayProcess, tls: ssl.SSLContext) -> bool:
    try:
        return handle.get("/readyz", tls)[0] == 200
    except OSError:
        return False


def _client(port: int, tls: ssl.SSLContext, user: str = "app", password: str = PASSWORD) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.starttls(context=tls)
    client.login(user, password)
    return client


def test_swaks_submission_and_json_logs(relay_process: RelayProcess, tls_client: ssl.SSLContext) -> None:
    swaks = shutil.which("swaks")
    assert swaks, "swaks is required (apt-get install -y swaks)"
    for port in relay_process.smtp:
        result = subprocess.run([swaks, "--server", f"127.0.0.1:{port}", "--tls", "--auth", "PLAIN",
                                 "--auth-user", "app", "--auth-password", PASSWORD,
                                 "--from", "app@example.com", "--to", "rcpt@example.net",
                                 "--header", "From: app@example.com", "--timeout", "10"],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "250 2.0.0 OK queued as" in result.stdout, result.stdout
    slots = relay_process.setup.spool / "slots"
    assert sum(1 for p in slot_files(slots) if p.stat().st_size) == 3, relay_process.log_path.read_text()
    accepted = [e for e in relay_process.logs() if e.get("event") == "accepted"]
    assert len(accepted) == 3
    assert all(len(e["queue_id"]) == 26 and e["credential"] == "app" for e in accepted)
    status, body = relay_process.get("/metrics", tls_client)
    assert status == 200
    assert b'mta_messages_accepted_total{source="smtp"} 3.0' in body


def test_canary_password_never_logged_nor_in_errors(relay_process: RelayProcess,
                                                    tls_client: ssl.SSLContext) -> None:
    texts: list[str] = []
    port = relay_process.smtp[1]
    client = _client(port, tls_client, "canary", CANARY)  # success
    client.sendmail("app@example.com", ["r@example.net"], MESSAGE)
    for user, password in (("canary", CANARY + "x"), ("app", CANARY), (CANARY, CANARY)):  # failures
        raw = RawSmtp(port)
        raw.starttls(tls_client)
        texts.append(raw.auth_plain(user, password))
        texts.append(raw.cmd("AUTH LOGIN"))
        texts.append(raw.cmd(base64.b64encode(user.encode())))
        texts.append(raw.cmd(base64.b64encode(password.encode())))
        texts.append(raw.cmd(b"AUTH PLAIN " + base64.b64encode(CANARY.encode()) + b"!"))  # undecodable
    for user, password in (("canary", CANARY + "x"), (CANARY, CANARY)):
        status, _, body = https(relay_process.http, tls_client, "/api/inject/v1", method="POST", body=b"{}",
                                user=user, password=password)
        assert status == 401
        texts.append(body.decode())
    # a broken config holding the canary: refused, and the reason must not quote it
    creds = relay_process.setup.config_dir / "credentials"
    write_volume(creds, {"credentials-000.json": json.dumps(
        {"credentials": [{"username": "x", "passwordVerifier": CANARY, "cramMd5Secret": CANARY,
                          "mechanisms": ["CRAM-MD5"], "domains": {"mode": "Nope"}}]})})
    _wait(lambda: any(e.get("event") == "config_refused" for e in relay_process.logs()), what="refusal")
    log_text = relay_process.log_path.read_text()
    assert '"level": "debug"' in log_text or '"level": "info"' in log_text
    secrets = [CANARY, base64.b64encode(CANARY.encode()).decode(),
               base64.b64encode(f"\0canary\0{CANARY}".encode()).decode()[:20]]
    for secret in secrets:
        assert secret not in log_text
        assert all(secret not in text for text in texts)
    assert all(text for text in texts)


def test_reload_removes_credential_within_two_seconds(relay_process: RelayProcess,
                                                      tls_client: ssl.SSLContext) -> None:
    open_sessions = [_client(port, tls_client) for port in relay_process.smtp]
    for client in open_sessions:
        assert client.sendmail("app@example.com", ["r@example.net"], MESSAGE) == {}
    setup = relay_process.setup
    setup.credentials = [c for c in setup.credentials if c["username"] != "app"]
    setup.write()
    started = time.monotonic()
    def refused() -> bool:
        if open_sessions[0].mail("app@example.com")[0] == 530:
            return True
        open_sessions[0].rset()
        return False

    _wait(refused, timeout=2.0, what="removed credential refused on an open session")
    for client in open_sessions[1:]:
        assert client.mail("app@example.com") == (530, b"5.7.0 Authentication required")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        _client(relay_process.smtp[0], tls_client)
    assert time.monotonic() - started < 2.5
    # other credentials' sessions were not dropped
    assert _client(relay_process.smtp[2], tls_client, "two-domains").noop()[0] == 250


def test_broken_config_refused_old_one_kept(relay_process: RelayProcess, tls_client: ssl.SSLContext) -> None:
    write_volume(relay_process.setup.config_dir, {"relay.yaml": "version: 1\nhostname: [unclosed\n"})
    _wait(lambda: any(e.get("event") == "config_refused" for e in relay_process.logs()), what="refusal")
    refusal = next(e for e in relay_process.logs() if e.get("event") == "config_refused")
    assert "relay.yaml" in refusal["reason"]
    assert refusal["level"] == "error"
    client = _client(relay_process.smtp[0], tls_client)
    assert client.sendmail("app@example.com", ["r@example.net"], MESSAGE) == {}


def test_sigterm_finishes_message_in_flight(relay_process: RelayProcess, tls_client: ssl.SSLContext) -> None:
    busy = _client(relay_process.smtp[0], tls_client)
    idle = _client(relay_process.smtp[1], tls_client)
    busy.mail("app@example.com")
    busy.rcpt("r@example.net")
    assert busy.docmd("DATA")[0] == 354
    busy.send(MESSAGE[:20])
    relay_process.proc.send_signal(signal.SIGTERM)
    _wait(lambda: not _ready(relay_process, tls_client), timeout=5, what="readyz to go false")
    busy.send(MESSAGE[20:] + b".\r\n")
    code, _ = busy.getreply()
    assert code == 250
    with contextlib.suppress(smtplib.SMTPServerDisconnected):  # told 421 and closed, or just closed
        assert idle.noop()[0] == 421
    assert relay_process.proc.wait(15) == 0
    assert any(e.get("event") == "stopped" for e in relay_process.logs())
