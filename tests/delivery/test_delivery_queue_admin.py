"""Queue administration on loopback: the real ``mta-relay`` process (front door and delivery process), a
real receiving SMTP server that defers what a test tells it to, and the admin API's ``/admin/v1/queue...``
over HTTPS with the admin token — list, show, retry, bounce (DSN at the receiver, AdminBounce events),
suspend (nothing delivered, also after a restart) and resume — and its refusals of bad input."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deliverykit import message
from relayproc import USERNAME, RelayProcess
from support.receiver_thread import ThreadedReceiver

ADMIN_TOKEN = "admin-" + "q" * 30
SLOW, FAST = "later@slow.example", "now@fast.example"
BUSY = "451 4.2.0 Mailbox busy, try again later"


def wait_for(done: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = done()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {within} s: {what}")


@pytest.fixture
def rx() -> Iterator[ThreadedReceiver]:
    with ThreadedReceiver() as receiver:
        yield receiver


@pytest.fixture
def relay(tmp_path: Path, rx: ThreadedReceiver) -> Iterator[RelayProcess]:
    """A relay whose deferred mail waits 30-60 s: long enough to look at, and to see a retry work."""
    (tmp_path / "admin-token").write_text(ADMIN_TOKEN)
    process = RelayProcess(tmp_path, rx.port, cluster="main", adminTokenFile=str(tmp_path / "admin-token"),
                           queue={"path": str(tmp_path / "spool"), "minRetryIntervalSeconds": 30,
                                  "maxRetryIntervalSeconds": 60}).start()
    try:
        yield process
    finally:
        process.stop()


def call(relay: RelayProcess, method: str, path: str, body: object = None, token: str = ADMIN_TOKEN,
         raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        f"https://127.0.0.1:{relay.http_port}{path}", data=data, method=method,
        headers={"X-MTA-Admin-Token": token, "X-MTA-Actor": "alice@test", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=relay.client_tls, timeout=70) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def queue_id(relay: RelayProcess, recipient: str) -> str:
    """The queue id of the message to ``recipient``, from its Reception event."""
    def found() -> str | None:
        _, answer = call(relay, "GET", f"/admin/v1/messages?recipient={recipient}&type=Reception")
        return answer["events"][-1]["id"] if answer.get("events") else None
    return str(wait_for(found, 10, f"the Reception event of {recipient}"))


def summary(relay: RelayProcess) -> dict[tuple[str, str], int]:
    status, answer = call(relay, "GET", "/admin/v1/queue")
    assert status == 200, answer
    return {(row["domain"], row["state"]): row["messages"] for row in answer["summary"]}


def deferred(relay: RelayProcess, rx: ThreadedReceiver, rcpt: str, subject: str = "Hello") -> str:
    """Submit a message the receiver defers; its queue id once its first attempt failed."""
    rx.receiver.script(f"rcpt:{rcpt}", BUSY, times=1000)
    relay.submit("app@example.com", [rcpt], message(to=rcpt, subject=subject))
    qid = queue_id(relay, rcpt)
    wait_for(lambda: call(relay, "GET", f"/admin/v1/queue/messages/{qid}")[1].get("attempts") == 1, 15,
             "the first attempt deferred")
    return qid


def events(relay: RelayProcess, query: str) -> list[dict[str, Any]]:
    status, answer = call(relay, "GET", f"/admin/v1/messages?{query}")
    assert status == 200, answer
    return list(answer["events"])


def test_ls_and_show_say_what_waits_where_and_why_without_the_body_unless_asked(
        relay: RelayProcess, rx: ThreadedReceiver) -> None:
    qid = deferred(relay, rx, SLOW, subject="Secret plans")
    deferred(relay, rx, "other@slow.example")
    relay.submit("app@example.com", [FAST], message(to=FAST))
    rx.wait_for(1)
    # delivered at the receiver, then removed from the queue a moment later
    wait_for(lambda: summary(relay) == {("slow.example", "deferred"): 2}, 10, "the fast one gone")
    _, listed = call(relay, "GET", "/admin/v1/queue")
    (row,) = listed["summary"]
    assert row["ages"]["<5m"] == 2
    assert row["oldest"] <= time.time()
    assert listed["suspensions"] == {"domains": {}, "credentials": {}}

    status, shown = call(relay, "GET", f"/admin/v1/queue/messages/{qid}")
    assert status == 200, shown
    assert (shown["state"], shown["attempts"]) == ("deferred", 1)
    assert shown["next_attempt"] > time.time() + 10  # 15-30 s: the first backoff, half jittered
    assert shown["envelope"]["sender"] == "app@example.com"
    assert shown["envelope"]["credential"] == USERNAME
    assert shown["envelope"]["message_id"] == "<m1@example.com>"
    (recipient,) = shown["recipients"]
    assert (recipient["recipient"], recipient["state"]) == (SLOW, "deferred")
    assert recipient["reply"] == BUSY
    assert "body_base64" not in shown
    assert "Secret plans" not in json.dumps(shown)

    status, with_body = call(relay, "GET", f"/admin/v1/queue/messages/{qid}?body=true")
    assert status == 200
    assert b"Subject: Secret plans" in base64.b64decode(with_body["body_base64"])
    log = relay.log.read_text()
    assert '"event": "queue_show_body"' in log
    assert "alice@test" in log
    assert "Secret plans" not in log

    assert call(relay, "GET", f"/admin/v1/queue/messages/{'0' * 26}")[0] == 404
    status, bad = call(relay, "GET", "/admin/v1/queue/messages/not-an-id")
    assert (status, bad["error"].split(":")[0]) == (400, "id")
    status, bad = call(relay, "GET", "/admin/v1/queue?state=deferred")
    assert (status, bad["error"].split(":")[0]) == (400, "state")
    status, bad = call(relay, "GET", f"/admin/v1/queue/messages/{qid}?body=maybe")
    assert (status, bad["error"].split(":")[0]) == (400, "body")
    assert call(relay, "GET", "/admin/v1/queue", token="wrong-token")[0] == 401


def test_show_reports_the_last_deferral_replies_after_a_restart(relay: RelayProcess,
                                                                rx: ThreadedReceiver) -> None:
    full = "452 4.2.2 Mailbox full"
    rx.receiver.script(f"rcpt:{SLOW}", BUSY, times=1000)
    rx.receiver.script("rcpt:full@slow.example", full, times=1000)
    relay.submit("app@example.com", [SLOW, "full@slow.example", FAST], message(to=SLOW, subject="Secret"))
    qid = queue_id(relay, SLOW)
    wait_for(lambda: call(relay, "GET", f"/admin/v1/queue/messages/{qid}")[1].get("attempts") == 1, 15,
             "the first attempt deferred")
    _, before = call(relay, "GET", f"/admin/v1/queue/messages/{qid}")
    relay.kill()  # SIGKILL: what show reports after it comes from the spool
    relay.start()
    shown = wait_for(lambda: (answer := call(relay, "GET", f"/admin/v1/queue/messages/{qid}"))[0] == 200
                     and answer[1], 10, "the entry queued again")
    assert (shown["state"], shown["attempts"]) == ("deferred", 1)
    replies = {r["recipient"]: (r["state"], r["reply"]) for r in shown["recipients"]}
    assert replies == {SLOW: ("deferred", BUSY), "full@slow.example": ("deferred", full),
                       FAST: ("delivered", "250 2.0.0 OK queued")}
    for old, new in zip(before["recipients"], shown["recipients"], strict=True):
        assert (old["recipient"], old["reply"]) == (new["recipient"], new["reply"])
        assert abs(old["at"] - new["at"]) < 1.0  # recorded with the retry line, a moment after the reply
    record = (relay.spool / "outcomes" / f"{qid}.out").read_text()
    assert BUSY in record
    assert "Secret" not in record
    assert "see you" not in record  # the body


def test_retry_tries_now_by_id_by_destination_and_all(relay: RelayProcess, rx: ThreadedReceiver) -> None:
    first = deferred(relay, rx, SLOW)
    deferred(relay, rx, "a@other.example")
    deferred(relay, rx, "b@third.example")
    for rcpt in (SLOW, "a@other.example", "b@third.example"):
        rx.receiver.unscript(f"rcpt:{rcpt}")  # the next hop takes them now; the queue would wait 30 s

    status, answer = call(relay, "POST", "/admin/v1/queue/retry", {"id": first})
    assert (status, answer["retried"]) == (200, [first]), answer
    rx.wait_for(1, within=10)
    assert rx.transactions[0].rcpt_tos == (SLOW,)
    status, answer = call(relay, "POST", "/admin/v1/queue/retry", {"domain": "OTHER.example."})
    assert (status, len(answer["retried"])) == (200, 1), answer
    rx.wait_for(2, within=10)
    status, answer = call(relay, "POST", "/admin/v1/queue/retry", {"all": True})
    assert (status, len(answer["retried"])) == (200, 1), answer
    rx.wait_for(3, within=10)
    wait_for(lambda: summary(relay) == {}, 10, "an empty queue")  # the relay records the 250 after it came
    assert call(relay, "POST", "/admin/v1/queue/retry", {"id": first})[0] == 404  # delivered: gone
    assert '"event": "queue_retry"' in relay.log.read_text()

    for body, name in (({}, "selector"), ({"id": first, "all": True}, "all"),
                       ({"domain": "no domain"}, "domain"), ({"all": "yes"}, "all"),
                       ({"sender": "x@example.com"}, "sender"), ({"id": first, "colour": "red"}, "colour")):
        status, bad = call(relay, "POST", "/admin/v1/queue/retry", body)
        assert (status, bad["error"].split(":")[0]) == (400, name), (body, bad)
    status, bad = call(relay, "POST", "/admin/v1/queue/retry", raw=b"{not json")
    assert (status, bad["error"].split(":")[0]) == (400, "body")
    status, bad = call(relay, "POST", "/admin/v1/queue/retry", raw=b"[1, 2]")
    assert (status, bad["error"].split(":")[0]) == (400, "body")


def test_bounce_sends_a_dsn_and_records_admin_bounce_events_never_to_the_null_sender(
        relay: RelayProcess, rx: ThreadedReceiver) -> None:
    qid = deferred(relay, rx, SLOW)
    status, bad = call(relay, "POST", "/admin/v1/queue/bounce", {"id": qid})
    assert (status, bad["error"].split(":")[0]) == (400, "reason")
    status, bad = call(relay, "POST", "/admin/v1/queue/bounce", {"all": True, "reason": "x"})
    assert (status, bad["error"].split(":")[0]) == (400, "all")
    # the DSN to app@example.com is deferred too: it stays queued, from the null sender
    rx.receiver.script("rcpt:app@example.com", BUSY, times=1000)
    status, answer = call(relay, "POST", "/admin/v1/queue/bounce",
                          {"domain": "slow.example", "reason": "mailbox migration"})
    assert status == 200, answer
    assert answer["bounced"] == [{"id": qid, "recipients": [SLOW], "dsn": True}]
    (event,) = wait_for(lambda: events(relay, "type=AdminBounce"), 10, "the AdminBounce event")
    assert (event["id"], event["recipient"], event["sender"]) == (qid, SLOW, "app@example.com")
    assert event["reason"] == "mailbox migration"
    assert event["response"]["code"] == 550
    assert "mailbox migration" in event["response"]["content"]
    assert event["bounce_classification"] == ""  # ours, not a next hop's: never suppresses the recipient
    wait_for(lambda: summary(relay) == {("example.com", "deferred"): 1}, 15, "only the DSN left, deferred")
    assert call(relay, "GET", f"/admin/v1/queue/messages/{qid}")[0] == 404

    # the DSN itself, from <>: bounced by sender, no DSN to a DSN
    rx.receiver.unscript("rcpt:app@example.com")
    status, answer = call(relay, "POST", "/admin/v1/queue/bounce", {"sender": "<>", "reason": "cleanup"})
    assert status == 200, answer
    ((dsn_entry),) = answer["bounced"]
    assert (dsn_entry["recipients"], dsn_entry["dsn"]) == (["app@example.com"], False)
    wait_for(lambda: summary(relay) == {}, 10, "an empty queue")
    time.sleep(1.5)  # a DSN to the DSN would have been delivered by now
    assert rx.transactions == []
    assert len(events(relay, "type=AdminBounce")) == 2
    log = relay.log.read_text()
    assert '"event": "queue_bounce"' in log
    assert '"by": "alice@test"' in log

    # a DSN for the first bounce reaches the sender once the next hop takes it: submit and bounce again
    qid = deferred(relay, rx, "x@slow.example")
    status, answer = call(relay, "POST", "/admin/v1/queue/bounce", {"id": qid, "reason": "typo in address"})
    assert status == 200, answer
    (dsn,) = rx.wait_for(1, within=10)
    assert (dsn.mail_from, dsn.rcpt_tos) == ("<>", ("app@example.com",))
    assert b"Returned by the MTA's administrator: typo in address" in dsn.data
    assert b"Final-Recipient: rfc822; x@slow.example" in dsn.data
    assert b"Hi Bob" not in dsn.data  # headers only, never the body


def test_suspend_holds_mail_across_a_restart_and_resume_delivers_it(
        relay: RelayProcess, rx: ThreadedReceiver) -> None:
    status, answer = call(relay, "POST", "/admin/v1/queue/suspend", {"domain": "slow.example"})
    assert (status, answer["changed"]) == (200, True), answer
    assert answer["suspensions"]["domains"]["slow.example"]["by"] == "alice@test"
    relay.submit("app@example.com", [SLOW, FAST], message(to=SLOW))
    (tx,) = rx.wait_for(1, within=10)
    assert tx.rcpt_tos == (FAST,)  # the other destination goes; the suspended one waits
    wait_for(lambda: summary(relay) == {("slow.example", "suspended"): 1}, 10, "the held recipient")
    qid = queue_id(relay, SLOW)
    _, shown = call(relay, "GET", f"/admin/v1/queue/messages/{qid}")
    assert [(r["recipient"], r["state"]) for r in shown["recipients"]] == [(SLOW, "suspended"),
                                                                          (FAST, "delivered")]
    assert call(relay, "POST", "/admin/v1/queue/retry", {"id": qid})[1]["suspended"] == [qid]

    relay.kill()  # SIGKILL: the suspension is on the volume already
    relay.start()
    time.sleep(2)
    assert len(rx.transactions) == 1
    assert summary(relay) == {("slow.example", "suspended"): 1}

    status, answer = call(relay, "POST", "/admin/v1/queue/resume", {"domain": "slow.example"})
    assert (status, answer["changed"], answer["released"]) == (200, True, 1), answer
    rx.wait_for(2, within=10)
    assert rx.transactions[1].rcpt_tos == (SLOW,)
    wait_for(lambda: summary(relay) == {}, 10, "an empty queue")
    assert events(relay, f"recipient={SLOW}&type=Bounce,Expiration,AdminBounce") == []

    # a credential: everything it sent waits, whatever the destination
    assert call(relay, "POST", "/admin/v1/queue/suspend", {"credential": USERNAME})[0] == 200
    relay.submit("app@example.com", [FAST], message(to=FAST))
    wait_for(lambda: summary(relay) == {("fast.example", "suspended"): 1}, 10, "held by its credential")
    time.sleep(1)
    assert len(rx.transactions) == 2
    status, answer = call(relay, "POST", "/admin/v1/queue/resume", {"credential": USERNAME})
    assert (status, answer["released"]) == (200, 1), answer
    rx.wait_for(3, within=10)
    assert call(relay, "POST", "/admin/v1/queue/resume", {"credential": USERNAME})[1]["changed"] is False
    log = relay.log.read_text()
    assert '"event": "queue_suspend"' in log
    assert '"event": "queue_resume"' in log

    for body, name in (({"domain": "a@b.example"}, "domain"), ({"credential": "no spaces"}, "credential"),
                       ({"domain": "x.example", "credential": USERNAME}, "credential"), ({}, "target")):
        status, bad = call(relay, "POST", "/admin/v1/queue/suspend", body)
        assert (status, bad["error"].split(":")[0]) == (400, name), (body, bad)
    assert call(relay, "POST", "/admin/v1/queue/explode", {})[0] == 404
