"""The suppression list as one relay enforces it, over real SMTP (smtplib) and HTTPS: a suppressed
recipient is refused at RCPT with its own reply and a Suppressed event, named in the HTTP answer's
failed_recipients while the others get the message; a credential that bypasses the list is not refused;
the admin API adds (checked field by field), lists, pages and removes entries; an expired entry refuses
nothing. The store's merge rules (``mta_relay.suppressions.store``) are unit tests below."""

from __future__ import annotations

import json
import smtplib
import ssl
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from conftest import RelaySetup
from mta_relay import replies
from mta_relay.admin_api import ACTOR_HEADER, SUPPRESSIONS_PATH, TOKEN_HEADER
from mta_relay.config import Suppression
from mta_relay.events.record import Event, EventType
from mta_relay.suppressions import exchange, store
from mta_relay.suppressions.bounces import from_bounce
from relaykit import PASSWORD, RelayThread, https, password_credential

TOKEN = "admin-" + "s" * 30
MESSAGE = b"From: app@example.com\r\nTo: gone@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


class Events:
    def __init__(self) -> None:
        self.emitted: list[Event] = []

    def emit(self, event: Event) -> None:
        self.emitted.append(event)


@pytest.fixture
def relay(relay_setup: RelaySetup) -> Iterator[tuple[RelayThread, Events]]:
    token = relay_setup.config_dir.parent / "admin-token"
    token.write_text(TOKEN)
    relay_setup.settings["adminTokenFile"] = str(token)
    relay_setup.credentials.append(password_credential("transactional", PASSWORD, bypassSuppressions=True))
    relay_setup.write()
    thread = RelayThread(relay_setup.config_dir).start()
    events = Events()
    thread.relay.events = events
    try:
        yield thread, events
    finally:
        thread.stop()


def admin(relay: RelayThread, tls: ssl.SSLContext, method: str, query: str = "", body: object = None,
          actor: str = "jane@platform") -> tuple[int, dict]:
    status, _, data = https(relay.server.http_port, tls, SUPPRESSIONS_PATH + query, method=method,
                            body=None if body is None else json.dumps(body).encode(),
                            headers={TOKEN_HEADER: TOKEN, ACTOR_HEADER: actor})
    return status, json.loads(data)


def rcpt_replies(relay: RelayThread, tls: ssl.SSLContext, username: str, rcpts: list[str]) -> list[tuple]:
    with smtplib.SMTP("127.0.0.1", relay.ports[1], timeout=10) as client:
        client.starttls(context=tls)
        client.login(username, PASSWORD)
        client.mail("app@example.com")
        return [client.rcpt(r) for r in rcpts]


def test_a_suppressed_recipient_is_refused_at_rcpt_with_an_event_and_the_others_go_on(
        relay: tuple[RelayThread, Events], tls_client: ssl.SSLContext) -> None:
    thread, events = relay
    status, answer = admin(thread, tls_client, "POST", body={"entries": [
        {"address": "Gone@Example.NET", "detail": "closed her account"}]})
    assert (status, answer["received"], answer["changed"]) == (200, 1, 1)
    got = rcpt_replies(thread, tls_client, "app", ["gone@example.net", "kept@example.net"])
    assert got[0] == (550, f"{replies.SUPPRESSED.enhanced} {replies.SUPPRESSED.text}".encode())
    assert got[1][0] == 250
    (suppressed,) = [e for e in events.emitted if e.type is EventType.SUPPRESSED]
    assert (suppressed.recipient, suppressed.credential, suppressed.sender) == ("gone@example.net", "app",
                                                                                "app@example.com")
    assert (suppressed.reason, suppressed.bounce_classification) == ("suppressed", "Manual")
    assert suppressed.response is not None
    assert suppressed.response.code == 550
    # A credential that bypasses the list sends to it all the same.
    assert rcpt_replies(thread, tls_client, "transactional", ["gone@example.net"])[0][0] == 250


def test_http_names_suppressed_recipients_in_failed_recipients_and_sends_to_the_rest(
        relay: tuple[RelayThread, Events], tls_client: ssl.SSLContext) -> None:
    thread, events = relay
    assert admin(thread, tls_client, "POST", body={"entries": [{"address": "gone@example.net"}]})[0] == 200
    body = {"envelope_sender": "app@example.com", "content": MESSAGE.decode(),
            "recipients": [{"email": "gone@example.net"}, {"email": "kept@example.net"}]}
    status, _, data = https(thread.server.http_port, tls_client, "/api/inject/v1", method="POST",
                            body=json.dumps(body).encode(), user="app", password=PASSWORD)
    answer = json.loads(data)
    assert status == 200, answer
    assert (answer["success_count"], answer["fail_count"], answer["failed_recipients"]) == (
        1, 1, ["gone@example.net"])
    assert replies.SUPPRESSED.text in answer["errors"][0]
    (entry,) = thread.relay.spool.queue_ids()
    assert thread.relay.spool.read(entry).envelope.rcpts == ("kept@example.net",)
    assert [e.recipient for e in events.emitted if e.type is EventType.SUPPRESSED] == ["gone@example.net"]
    # Every recipient suppressed: nothing is queued, and the answer says why.
    body["recipients"] = [{"email": "gone@example.net"}]
    status, _, data = https(thread.server.http_port, tls_client, "/api/inject/v1", method="POST",
                            body=json.dumps(body).encode(), user="app", password=PASSWORD)
    assert (status, json.loads(data)["reason"]) == (403, "suppressed")


def test_admin_api_lists_pages_removes_and_names_the_bad_field(
        relay: tuple[RelayThread, Events], tls_client: ssl.SSLContext) -> None:
    thread, _ = relay
    entries = [{"address": f"user{i:03d}@example.net", "reason": "InvalidRecipient"} for i in range(25)]
    added = admin(thread, tls_client, "POST", body={"source": "Import", "entries": entries})[1]
    assert added["changed"] == 25
    first = admin(thread, tls_client, "GET", "?limit=10")[1]
    assert (first["total"], len(first["entries"]), first["next"]) == (25, 10, "user009@example.net")
    assert first["entries"][0] == {**first["entries"][0], "address": "user000@example.net",
                                   "reason": "InvalidRecipient", "source": "Import",
                                   "addedBy": "jane@platform"}
    rest = admin(thread, tls_client, "GET", f"?limit=20&after={first['next']}")[1]
    assert (len(rest["entries"]), rest["next"]) == (15, None)
    assert len(admin(thread, tls_client, "GET", "?prefix=user01")[1]["entries"]) == 10
    status, removed = admin(thread, tls_client, "DELETE", "?address=" + quote("USER001@example.net"))
    assert (status, removed["removed"]) == (200, True)
    assert admin(thread, tls_client, "GET", "?address=user001@example.net")[1]["entries"] == []
    assert rcpt_replies(thread, tls_client, "app", ["user001@example.net"])[0][0] == 250
    assert rcpt_replies(thread, tls_client, "app", ["user002@example.net"])[0][0] == 550
    # All or nothing, the bad entry named; nothing of the request is stored.
    status, bad = admin(thread, tls_client, "POST", body={"entries": [{"address": "ok@example.net"},
                                                                      {"address": "no-at-sign"}]})
    assert status == 400
    assert bad["error"].startswith("entries[1].address:")
    assert admin(thread, tls_client, "GET", "?address=ok@example.net")[1]["entries"] == []
    status, bad = admin(thread, tls_client, "POST", body={"entries": [
        {"address": "a@example.net", "expires": time.time() - 5}]})
    assert status == 400
    assert bad["error"].startswith("entries[0].expires:")
    assert admin(thread, tls_client, "GET", "?limit=0")[0] == 400
    assert admin(thread, tls_client, "GET", "?bogus=1")[0] == 400
    status, _, _ = https(thread.server.http_port, tls_client, SUPPRESSIONS_PATH, headers={TOKEN_HEADER: "x"})
    assert status == 401


def test_an_entry_refuses_until_it_expires(relay: tuple[RelayThread, Events], tls_client: ssl.SSLContext
                                           ) -> None:
    thread, _ = relay
    assert admin(thread, tls_client, "POST", body={"entries": [
        {"address": "brief@example.net", "expires": time.time() + 1.5}]})[0] == 200
    assert rcpt_replies(thread, tls_client, "app", ["brief@example.net"])[0][0] == 550
    time.sleep(1.6)
    assert rcpt_replies(thread, tls_client, "app", ["brief@example.net"])[0][0] == 250


# --- the store and the rule, pure ---------------------------------------------------------------

pytest_unit = pytest.mark.unit


@pytest_unit
def test_merge_is_last_writer_wins_and_a_removal_wins_a_tie(tmp_path) -> None:
    db = store.SuppressionStore(tmp_path / "s.db")
    first = store.entry("a@example.net", reason="Manual", source="Manual", added_by="x", now=100.0)
    assert db.put([first]) == 1
    assert db.put([first]) == 0  # the same row again changes nothing: no new change number
    seq = db.seq()
    older = store.entry("a@example.net", reason="InvalidRecipient", source="Bounce", added_by="y", now=50.0)
    assert db.put([older]) == 0
    assert db.seq() == seq
    assert db.put([store.tombstone("a@example.net", added_by="z", now=100.0)]) == 1
    assert db.lookup("a@example.net", now=101.0) is None
    newer = store.entry("a@example.net", reason="InvalidRecipient", source="Bounce", added_by="y", now=200.0)
    assert db.put([newer]) == 1
    found = db.lookup("A@EXAMPLE.NET", now=201.0)
    assert found is not None
    assert (found.reason, found.added_by) == ("InvalidRecipient", "y")


@pytest_unit
def test_changes_page_in_order_and_a_peer_merges_them(tmp_path) -> None:
    a, b = store.SuppressionStore(tmp_path / "a.db"), store.SuppressionStore(tmp_path / "b.db")
    a.put(store.entry(f"u{i}@example.net", reason="Manual", source="Import", added_by="x", now=10.0 + i)
          for i in range(12))
    since, sizes = 0, []
    while True:
        page = exchange.decode(exchange.answer(a, "a-0", {"epoch": a.epoch, "since": str(since)}, page=5))
        sizes.append(len(page.entries))
        b.put(page.entries)
        since = page.seq
        if not page.more:
            break
    assert sizes == [5, 5, 2]
    assert b.count(now=100.0) == 12
    # Echo: what b learned from a, a gets back and ignores (no change, no new number).
    back = exchange.decode(exchange.answer(b, "b-0", {}))
    assert a.put(back.entries) == 0
    # Another epoch (a new volume) gets everything from the start.
    assert len(exchange.decode(exchange.answer(a, "a-0", {"epoch": "other", "since": "999"})).entries) == 12


@pytest_unit
def test_purge_forgets_expired_entries_and_old_tombstones(tmp_path) -> None:
    db = store.SuppressionStore(tmp_path / "s.db")
    db.put([store.entry("e@example.net", reason="Manual", source="Manual", added_by="x", now=0.0,
                        expires=10.0),
            store.entry("k@example.net", reason="Manual", source="Manual", added_by="x", now=0.0),
            store.tombstone("t@example.net", added_by="x", now=0.0)])
    assert db.count(now=5.0) == 2
    assert db.purge(now=11.0) == 1
    assert db.purge(now=store.TOMBSTONE_DAYS * 86400 + 1.0) == 1
    assert [e.address for e in db.query(now=12.0)] == ["k@example.net"]


@pytest_unit
@pytest.mark.parametrize(("category", "kind", "added"), [
    ("InvalidRecipient", "hard", True), ("InvalidRecipient", "soft", False), ("QuotaIssues", "hard", False)])
def test_only_a_hard_bounce_of_a_named_class_suppresses(category: str, kind: str, added: bool) -> None:
    found = from_bounce(Suppression(expire_after_seconds=3600), recipient="x@example.net", category=category,
                        kind=kind, credential="app", reply="550 5.1.1 no such user", now=1000.0)
    assert (found is not None) == added
    if found is not None:
        assert (found.source, found.added_by, found.expires, found.detail) == (
            "Bounce", "app", 4600.0, "550 5.1.1 no such user")
    off = Suppression(enabled=False)
    assert from_bounce(off, recipient="x@example.net", category="InvalidRecipient", kind="hard",
                       credential="app", reply="", now=0.0) is None


@pytest_unit
def test_settings_refuse_an_unknown_bounce_class() -> None:
    with pytest.raises(ValueError, match="unknown bounce class 'NoSuchClass'"):
        Suppression(classes=["NoSuchClass"])


def test_the_list_switched_off_refuses_nobody_and_keeps_its_entries(
        relay_setup: RelaySetup, tls_client: ssl.SSLContext) -> None:
    token = relay_setup.config_dir.parent / "admin-token"
    token.write_text(TOKEN)
    relay_setup.settings.update(adminTokenFile=str(token), suppression={"enabled": False})
    relay_setup.write()
    thread = RelayThread(relay_setup.config_dir).start()
    try:
        added = admin(thread, tls_client, "POST", body={"entries": [{"address": "gone@example.net"}]})
        assert added[0] == 200
        assert rcpt_replies(thread, tls_client, "app", ["gone@example.net"])[0][0] == 250
        assert admin(thread, tls_client, "GET")[1]["total"] == 1
    finally:
        thread.stop()
