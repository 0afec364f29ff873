"""End to end on the test bed, three MTAs: a password rotated under continuous load (no message refused;
after the grace period the old password is refused by every MTA), and a credential suspended and resumed
with `kubectl mta credential`, taking effect on every MTA within 5 seconds. Times are reported as figures
(tests/e2e/conftest.py prints them)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter

import aiosmtplib
import pytest
from e2ekit import HOSTNAME, auth_code, figure, message, submit
from mta_operator import naming
from mta_operator.kubectl_plugin.cli import main as kubectl_mta
from mta_relay import replies
from support.waiting import wait_until

pytestmark = pytest.mark.testbed

GRACE = "12s"  # long enough for the load to switch over, short enough to watch it end


def _credential(chain, name: str) -> dict:
    return {"apiVersion": "mta-operator.io/v1alpha1", "kind": "SmtpCredential",
            "metadata": {"name": name, "namespace": chain.namespace},
            "spec": {"clusterRef": {"name": "main"},
                     "domains": {"mode": "Specific", "names": ["example.com"]}}}


def _plugin(chain, *args: str) -> None:
    assert kubectl_mta(["--kubeconfig", str(chain.kube.kubeconfig), "-n", chain.namespace, *args]) == 0


def _live_everywhere(chain, ips: list[str], name: str, password: str) -> None:
    port, tls = chain.port(587), chain.tls
    for ip in ips:
        wait_until(lambda ip=ip: auth_code(ip, port, tls, name, password) == 235,
                   what=f"{name} accepted by {ip}")


def _until_every_mta(chain, ips: list[str], name: str, password: str, code: int, since: float,
                     limit: float = 15) -> dict[str, float]:
    """Seconds after ``since`` (monotonic) at which each MTA first answered AUTH with ``code``. Each MTA is
    asked by its own thread, so one slow AUTH does not delay the others' measurement."""
    port, tls = chain.port(587), chain.tls
    after: dict[str, float] = {}

    def probe(ip: str) -> None:
        while time.monotonic() - since < limit:
            if auth_code(ip, port, tls, name, password) == code:
                after[ip] = time.monotonic() - since
                return

    threads = [threading.Thread(target=probe, args=(ip,)) for ip in ips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(limit + 30)
    return after


def test_rotation_under_load_refuses_nothing_and_the_old_password_ends_on_every_mta(chain):
    chain.scale(3)
    ips = chain.addresses()
    chain.apply(_credential(chain, "rotating"))
    old = chain.connection("rotating")["password"]
    _live_everywhere(chain, ips, "rotating", old)
    port, tls = chain.port(587), chain.tls
    current = [old]
    accepted: list[str] = []
    failures: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            token, data = message("app@example.com", "rotation@example.net")
            reply = submit(ips[n % len(ips)], port, tls, username="rotating", password=current[0],
                           mail_from="app@example.com", rcpt="rotation@example.net", data=data)
            n += 1
            if reply.accepted:
                accepted.append(token)
            else:
                failures[f"{reply.stage} {reply.code} {reply.text}"] += 1

    sender = threading.Thread(target=load)
    sender.start()
    try:
        time.sleep(2)
        requested = time.monotonic()
        _plugin(chain, "credential", "rotate", "rotating", "--grace", GRACE)
        # What an app sees: the connection Secret. It switches as soon as the new password is there.
        new = wait_until(lambda: (p := chain.secret(naming.connection("rotating"))["password"]) != old and p,
                         interval=0.1, what="the new password in the connection Secret")
        current[0] = new
        figure("rotation: new password in the connection Secret after (s)",
               round(time.monotonic() - requested, 2))
        before_switch = len(accepted)
        time.sleep(3)
    finally:
        stop.set()
        sender.join(30)
    figure("rotation under load: messages accepted (250)", len(accepted))
    figure("rotation under load: submissions refused", dict(failures))
    assert not failures
    assert before_switch >= 3
    assert len(accepted) > before_switch  # the new password was used too

    status = chain.get("smtpcredential", "rotating")["status"]
    newest, replaced = status["passwords"]
    assert "expires" not in newest
    expires = dt.datetime.fromisoformat(replaced["expires"])
    _live_everywhere(chain, ips, "rotating", old)  # still within the grace period
    left = (expires - dt.datetime.now(dt.UTC)).total_seconds()
    assert left > 0, status
    time.sleep(left)
    ended = time.monotonic()
    refused_after = _until_every_mta(chain, ips, "rotating", old, 535, ended)
    figure("rotation: after notAfter, every MTA refuses the old password after (s)",
           round(max(refused_after.values()), 2) if refused_after else None)
    assert set(refused_after) == set(ips), refused_after
    assert max(refused_after.values()) < 5
    for ip in ips:
        assert auth_code(ip, port, tls, "rotating", new) == 235
    # The operator takes the expired verifier out of the table, and status shows one password.
    wait_until(lambda: len(chain.get("smtpcredential", "rotating")["status"]["passwords"]) == 1,
               what="status listing only the new password")


async def _watch_session(ip: str, port: int, tls, name: str, password: str, suspended: threading.Event,
                         seen: dict[str, float], since: list[float]) -> None:
    """One authenticated session on one MTA, as an app holding its connection open: MAIL and RSET until
    the MTA refuses the suspended credential (an open session meets it at its next MAIL), then AUTH again
    until the MTA accepts it once more. Each probe is one round trip, so the figures are the MTA's, not
    the probe's."""
    smtp = aiosmtplib.SMTP(hostname=ip, port=port, start_tls=False, timeout=15, local_hostname="e2e.test")
    await smtp.connect()
    await smtp.ehlo()
    await smtp.starttls(server_hostname=HOSTNAME, tls_context=tls)
    await smtp.ehlo()
    await smtp.login(name, password)
    try:
        seen[f"ready {ip}"] = 0.0
        suspended.wait()  # blocking is fine: this loop has nothing else to do until the change is asked for
        while time.monotonic() - since[0] < 15:
            try:
                await smtp.mail("app@example.com")
                await smtp.rset()
            except aiosmtplib.SMTPResponseException as error:
                if error.code == replies.CREDENTIAL_SUSPENDED.code:
                    seen[f"suspend {ip}"] = time.monotonic() - since[0]
                    break
        while f"resume {ip}" not in seen and time.monotonic() - since[0] < 60:
            if len(since) < 2:  # resume not asked for yet
                await asyncio.sleep(0.05)
                continue
            try:
                await smtp.login(name, password)
                seen[f"resume {ip}"] = time.monotonic() - since[1]
            except aiosmtplib.SMTPAuthenticationError as error:
                if error.code != replies.CREDENTIAL_SUSPENDED.code:
                    seen[f"unexpected {ip} {error.code}"] = 0.0
                    break
    finally:
        smtp.close()


def test_suspend_and_resume_reach_every_mta_within_5_seconds(chain):
    chain.scale(3)
    ips = chain.addresses()
    chain.apply(_credential(chain, "pausable"))
    password = chain.connection("pausable")["password"]
    _live_everywhere(chain, ips, "pausable", password)
    port, tls = chain.port(587), chain.tls
    asked, seen, since = threading.Event(), {}, []
    sessions = [threading.Thread(target=lambda ip=ip: asyncio.run(
        _watch_session(ip, port, tls, "pausable", password, asked, seen, since))) for ip in ips]
    for session in sessions:
        session.start()
    wait_until(lambda: all(f"ready {ip}" in seen for ip in ips), what="a session authenticated on every MTA")

    _plugin(chain, "credential", "suspend", "pausable")
    since.append(time.monotonic())  # from the API server's answer, as the deletion test in test_e2e_chain
    asked.set()
    wait_until(lambda: all(f"suspend {ip}" in seen for ip in ips), timeout=20, interval=0.05,
               what="every MTA refusing the suspended credential")
    suspend_after = max(seen[f"suspend {ip}"] for ip in ips)
    figure("suspend: every MTA refuses (525 5.7.13) after (s)", round(suspend_after, 2))
    for ip in ips:  # and a new session too, at AUTH
        assert auth_code(ip, port, tls, "pausable", password) == replies.CREDENTIAL_SUSPENDED.code
    cred = wait_until(lambda: (c := chain.get("smtpcredential", "pausable"))
                      and any(x["type"] == "Suspended" and x["status"] == "True"
                              for x in c["status"]["conditions"]) and c, what="Suspended=True")
    assert any(x["type"] == "Ready" and x["status"] == "True" for x in cred["status"]["conditions"])
    assert chain.secret(naming.connection("pausable"))["password"] == password  # kept

    _plugin(chain, "credential", "resume", "pausable")
    since.append(time.monotonic())
    for session in sessions:
        session.join(30)
    assert all(f"resume {ip}" in seen for ip in ips), seen
    assert not [k for k in seen if k.startswith("unexpected")], seen
    resume_after = max(seen[f"resume {ip}"] for ip in ips)
    figure("resume: every MTA accepts again after (s)", round(resume_after, 2))
    assert suspend_after < 5
    assert resume_after < 5
