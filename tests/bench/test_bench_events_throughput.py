"""The events throughput benchmark's harness works: a tiny run of the real thing (timing sink, webhook
receiver, private Postfix, three relays with 0, 1 and 2 webhooks) gets every accepted message to the sink
and every event those messages made to the receiver, once, for each webhook its filter lets through; the
receiver refuses what is not signed with the webhooks' secret; the report's floor compares medians and
needs every event. No timing assertions: speed is the benchmark's business (bench/README.md). Needs root
and postfix, dovecot-core."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mta_relay.events.record import Event, EventType
from mta_relay.events.webhooks import decode_secret, encode_payload, sign

from bench.delivery import run
from bench.delivery.report import Result
from bench.events import throughput
from bench.events.receiver import parse_lines
from bench.events.throughput_report import BASELINE, HookFigures, Row, floor, render
from bench.frontdoor.certs import write_certs
from bench.frontdoor.peers import POSTFIX

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes of base64: a valid Standard Webhooks key


def test_a_tiny_run_brings_every_message_and_every_event_through_each_relay() -> None:
    assert os.geteuid() == 0, "the Postfix peer is a private instance that starts as root"
    plan = run.Plan(max_messages=12, max_seconds=60, scenarios=((3, 2),), rounds=1, stall_seconds=20,
                    drain_cap_seconds=60)

    done = throughput.execute(plan, progress=lambda _line: None)

    assert sorted(row.result.peer for row in done.rows) == sorted(
        [POSTFIX, *(v.peer for v in throughput.VARIANTS)])
    for row in done.rows:
        r = row.result
        assert r.load["errors"] == 0, r.load["error_samples"]
        assert (r.accepted, r.delivered, r.missing, r.duplicates) == (12, 12, 0, 0), r
        assert r.cpu_seconds > 0
    hooks = {row.result.peer: row.hooks for row in done.rows}
    assert hooks[POSTFIX] == {}
    assert hooks[BASELINE] == {}
    assert {n: (h.expected, h.received) for n, h in hooks["relay, 1 webhook"].items()} == {"all": (24, 24)}
    # The filtered webhook gets the Delivery of each message, not its Reception.
    assert {n: (h.expected, h.received) for n, h in hooks["relay, 2 webhooks"].items()} == {
        "all": (24, 24), "outcomes": (12, 12)}
    for figures in [*hooks["relay, 1 webhook"].values(), *hooks["relay, 2 webhooks"].values()]:
        assert figures.events_per_s > 0
        assert figures.lag_ms == figures.lag_ms
    # Every relay stored a Reception and a Delivery per message (20 warm-up + 12), webhooks or not.
    assert {name: (s.messages, s.events) for name, s in done.stores.items()} == {
        v.peer: (32, 64) for v in throughput.VARIANTS}
    assert all(s.bytes > 0 and s.log_bytes > 0 for s in done.stores.values())
    assert '"unverified": 0' in done.notes[-1]
    assert not done.workdir.exists()

    table = render(done.rows, done.stores, {"cpus": "2"}, "tiny", done.notes, {})
    assert "Floor met in" in table
    assert "## Event store on disk after the run" in table


def test_the_receiver_writes_signed_events_and_refuses_the_rest(tmp_path: Path) -> None:
    certs = write_certs(tmp_path / "certs")
    (tmp_path / "secret").write_text(SECRET)
    lines = tmp_path / "events.txt"
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.events.receiver", "--events", str(lines),
         "--cert", str(certs.cert_chain), "--key", str(certs.key), "--secret-file", str(tmp_path / "secret")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(receiver.stdout.readline())["port"]  # type: ignore[union-attr]
        events = [Event(EventType.DELIVERY, "q1", "a@example.com", "b@example.net", "bench",
                        message_id="<1000000000007@loadgen.localhost>"),
                  Event(EventType.BOUNCE, "q2", "", "c@example.net", "", message_id="<other@x>")]
        body = encode_payload(events, time.time())
        url = f"https://127.0.0.1:{port}/hooks/onehook/all"
        tls = ssl.create_default_context(cafile=str(certs.ca))
        before = time.monotonic()
        assert _post(url, body, sign(decode_secret(SECRET), "msg_1", int(time.time()), body), tls) == 204
        assert _post(url, body, sign(b"x" * 32, "msg_1", int(time.time()), body), tls) == 401
        got = parse_lines(lines.read_text())
        assert [(hook, seq, kind, event_id) for hook, seq, kind, event_id, _ in got] == [
            ("onehook/all", 1_000_000_000_007, "Delivery", events[0].event_id),
            ("onehook/all", -1, "Bounce", events[1].event_id)]
        assert all(before <= at <= time.monotonic() for *_, at in got)
    finally:
        receiver.send_signal(signal.SIGTERM)
        out, _ = receiver.communicate(timeout=20)
    assert json.loads(out.strip().splitlines()[-1]) == {"requests": 1, "events": 2, "unverified": 1}


def _post(url: str, body: bytes, signature: str, tls: ssl.SSLContext) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310 (https)
        "content-type": "application/json", "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": signature})
    try:
        with urllib.request.urlopen(request, context=tls, timeout=10) as answer:  # noqa: S310 (https)
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def _row(peer: str, rate: float, received: int = 10, cpu: float = 0.3, round_: int = 1) -> Row:
    result = Result(peer, 100, 10, round_, {"messages": 100, "errors": 0, "msgs_per_s": rate}, 100, 0, 0, 0,
                    100 / rate, 0.0, {}, None, {}, {}, 0, cpu, 0.0)
    hooks = {} if peer in (POSTFIX, BASELINE) else {"all": HookFigures(10, received, 0, 1.0)}
    return Row(result, hooks, 0.0)


def test_the_floor_compares_medians_and_needs_every_event() -> None:
    rows = [_row(BASELINE, r, round_=n) for n, r in enumerate((100, 200, 110), 1)]
    rows += [_row("relay, 1 webhook", r, round_=n) for n, r in enumerate((95, 40, 99), 1)]
    rows += [_row(POSTFIX, 500)]
    lines = floor(rows)
    # Medians: one slow round does not decide; beside them each round's ratio.
    assert "| relay, 1 webhook | 95 | 110 | 0.86 | 0.90 (0.20-0.95) |" in lines[2]
    assert lines[-1] == "Floor met in 0 of 1."
    fast = [_row(BASELINE, 100), _row("relay, 1 webhook", 95)]
    assert floor(fast)[-1] == "Floor met in 1 of 1."
    lost = [_row(BASELINE, 100), _row("relay, 1 webhook", 95, received=9)]
    assert floor(lost)[-1] == "Floor met in 0 of 1."
