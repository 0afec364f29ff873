"""The suppression list across two real relay processes on loopback (one cluster certificate, one peer
token, each told of the other in ``quotaExchange``): a hard bounce (550 5.1.1 from a real receiving
SMTP server) adds the recipient on the MTA that delivered, and the next message to it is refused on the
other MTA within seconds; a removal on the other MTA lifts it on the first; a restarted MTA keeps the
list (its volume) and catches up with what changed while it was down."""

from __future__ import annotations

import json
import shutil
import smtplib
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from deliverykit import message
from mta_relay.admin_api import SUPPRESSIONS_PATH, TOKEN_HEADER
from relayproc import PASSWORD, USERNAME, RelayProcess
from support.receiver_thread import ThreadedReceiver

TOKEN = "peer-token-" + "p" * 32
ADMIN = "admin-" + "a" * 30
NAMES = ("s-mta-0", "s-mta-1")
GONE, OK = "gone@example.net", "ok@example.net"


def wait_for(done: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if found := done():
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {within} s: {what}")


class Pair:
    def __init__(self, tmp_path: Path, smarthost_port: int) -> None:
        self.relays = []
        for name in NAMES:
            workdir = tmp_path / name
            workdir.mkdir()
            relay = RelayProcess(workdir, smarthost_port, env={"POD_NAME": name},
                                 queue={"path": str(workdir / "spool")},
                                 suppression={"expireAfterSeconds": 86400})
            (relay.dir / "peer-token").write_text(TOKEN + "\n")
            (relay.dir / "admin-token").write_text(ADMIN + "\n")
            self.relays.append(relay)
        first = self.relays[0]
        for relay in self.relays[1:]:
            for name in ("tls.crt", "tls.key"):  # one certificate for the cluster's MTAs
                shutil.copyfile(tmp_path / NAMES[0] / "tls" / name, relay.dir.parent / "tls" / name)
            relay.ca, relay.client_tls = first.ca, first.client_tls
        peers = [{"name": name, "url": f"https://127.0.0.1:{r.http_port}"}
                 for name, r in zip(NAMES, self.relays, strict=True)]
        for relay in self.relays:
            path = relay.dir / "relay.yaml"
            settings = yaml.safe_load(path.read_text())
            settings.update(handoff={"tokenFile": "peer-token"}, adminTokenFile="admin-token",
                            quotaExchange={"peers": peers, "intervalSeconds": 1.0})
            path.write_text(yaml.safe_dump(settings))


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    with ThreadedReceiver() as rx:
        yield rx


@pytest.fixture
def pair(tmp_path: Path, receiver: ThreadedReceiver) -> Iterator[Pair]:
    both = Pair(tmp_path, receiver.port)
    try:
        for relay in both.relays:
            relay.start()
        yield both
    finally:
        for relay in both.relays:
            relay.stop()


def rcpt_code(relay: RelayProcess, rcpt: str) -> int:
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as smtp:
        smtp.starttls(context=relay.client_tls)
        smtp.login(USERNAME, PASSWORD)
        smtp.mail("app@example.com")
        return smtp.rcpt(rcpt)[0]


def admin(relay: RelayProcess, method: str, query: str = "") -> dict[str, Any]:
    request = urllib.request.Request(f"https://127.0.0.1:{relay.http_port}{SUPPRESSIONS_PATH}{query}",
                                     method=method, headers={TOKEN_HEADER: ADMIN})
    with urllib.request.urlopen(request, timeout=10, context=relay.client_tls) as response:  # noqa: S310
        return json.loads(response.read())


def test_a_hard_bounce_on_one_mta_is_refused_on_the_other_within_seconds(
        pair: Pair, receiver: ThreadedReceiver) -> None:
    a, b = pair.relays
    receiver.receiver.script(f"rcpt:{GONE}", "550 5.1.1 <gone@example.net>: Recipient address rejected: "
                                             "User unknown in virtual mailbox table")
    a.submit("app@example.com", [GONE, OK], message())
    bounced = time.monotonic()
    wait_for(lambda: rcpt_code(b, GONE) == 550, 20, "the other MTA refusing the bounced recipient")
    print(f"hard bounce on one MTA to the other refusing the recipient: {time.monotonic() - bounced:.1f} s")
    (entry,) = admin(b, "GET", "?address=" + quote(GONE))["entries"]
    assert (entry["reason"], entry["source"], entry["addedBy"]) == ("InvalidRecipient", "Bounce", USERNAME)
    assert "5.1.1" in entry["detail"]
    assert 86400 - 60 < entry["expires"] - entry["created"] <= 86400
    assert rcpt_code(a, GONE) == 550
    assert rcpt_code(b, OK) == 250  # delivered, never suppressed

    # Removed by hand on B: lifted on A within seconds.
    assert admin(b, "DELETE", "?address=" + quote(GONE))["removed"] is True
    removed = time.monotonic()
    wait_for(lambda: rcpt_code(a, GONE) == 250, 20, "the removal reaching the first MTA")
    print(f"removal on one MTA to the other accepting the recipient: {time.monotonic() - removed:.1f} s")


def test_a_restarted_mta_keeps_its_list_and_catches_up(pair: Pair) -> None:
    a, b = pair.relays
    body = json.dumps({"entries": [{"address": f"kept{i}@example.net"} for i in range(3)]}).encode()
    request = urllib.request.Request(f"https://127.0.0.1:{a.http_port}{SUPPRESSIONS_PATH}", data=body,
                                     method="POST", headers={TOKEN_HEADER: ADMIN,
                                                             "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10, context=a.client_tls) as response:  # noqa: S310
        assert json.loads(response.read())["changed"] == 3
    wait_for(lambda: admin(b, "GET")["total"] == 3, 20, "B holding A's entries")
    b.kill()
    assert admin(a, "DELETE", "?address=kept0%40example.net")["removed"] is True  # while B is down
    b.start()
    assert rcpt_code(b, "kept1@example.net") == 550  # its own copy, at once
    wait_for(lambda: rcpt_code(b, "kept0@example.net") == 250, 20, "B catching up with the removal")
    assert admin(b, "GET")["total"] == 2
