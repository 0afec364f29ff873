"""The delivery benchmark's harness works: a tiny run of the real thing (timing sink, private Postfix with
Dovecot SASL, mta-relay, all as processes under strace, the load generator) gets every accepted message to
the sink exactly once through each peer and accounts for it: latency per message, syncs by target, CPU.
The matching and parsing underneath are checked on their own. No timing assertions: speed is the
benchmark's business (bench/README.md). Needs root, postfix, dovecot-core and strace."""

from __future__ import annotations

import json
import math
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from bench.delivery import run
from bench.delivery.receipts import complete_lines, match, parse_sink_lines
from bench.delivery.report import Result, checks, render
from bench.delivery.sink import message_seq
from bench.delivery.syncs import sync_use
from bench.frontdoor.message import make_message
from bench.frontdoor.peers import POSTFIX, RELAY
from bench.frontdoor.rounds import Check

REPO = Path(__file__).resolve().parents[2]


def test_a_tiny_run_delivers_every_message_through_both_peers_and_accounts_for_it() -> None:
    assert os.geteuid() == 0, "the Postfix peer is a private instance that starts as root"
    plan = run.Plan(max_messages=12, max_seconds=60, scenarios=((3, 2),), rounds=1, stall_seconds=20,
                    drain_cap_seconds=60)

    done = run.execute(plan, progress=lambda _line: None)

    # A timed (untraced) run and a traced run per peer.
    assert sorted((r.peer, r.traced) for r in done.results) == sorted(
        [(POSTFIX, False), (RELAY, False), (POSTFIX, True), (RELAY, True)])
    for r in done.results:
        assert r.load["errors"] == 0, r.load["error_samples"]
        assert (r.accepted, r.delivered, r.missing, r.duplicates, r.unexpected) == (12, 12, 0, 0, 0), r
        assert r.e2e_seconds > 0
        assert r.latency["p50_ms"] <= r.latency["p90_ms"] <= r.latency["p99_ms"] <= r.latency["max_ms"]
        assert r.cpu_seconds > 0
        assert r.cpu_wait_seconds >= 0
        if not r.traced:
            assert (r.sync_calls, r.sync_targets) == (None, {})
            continue
        # Both peers make each accepted message durable before the 250, so at least one sync each.
        assert r.sync_calls is not None
        assert r.sync_calls >= r.accepted
        assert sum(r.sync_targets.values()) == r.sync_calls
        assert set(r.sync_seconds) <= set(r.sync_targets)
        assert sum(r.sync_seconds.values()) > 0
    relay = next(r for r in done.results if r.peer == RELAY and r.traced)
    assert any("relay-spool" in target for target in relay.sync_targets), relay.sync_targets
    assert not done.workdir.exists()  # not kept: the temp dir (configs, password files) is gone
    assert '{"messages": 128}' in done.notes[-1]  # 2 peers, 2 passes, each 20 warm-up + 12

    table = render(done.results, {"cpus": "2"}, plan.bounds(), done.notes)
    assert "## Floors" in table
    assert "## Where the syncs go" in table


def test_the_timing_sink_writes_a_receipt_per_message_as_it_arrives(tmp_path: Path) -> None:
    receipts = tmp_path / "receipts.txt"
    sink = subprocess.Popen([sys.executable, "-m", "bench.delivery.sink", "--receipts", str(receipts)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(sink.stdout.readline())["port"]  # type: ignore[union-attr]
        before = time.monotonic()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.net"],
                            make_message("a@example.com", "b@example.net", 4_000_000_017))
            client.sendmail("<>", ["b@example.net"], b"Subject: a bounce\r\n\r\nno bench Message-ID\r\n")
        lines, connections = parse_sink_lines(complete_lines(receipts.read_bytes()).decode())
        assert [seq for seq, _ in lines] == [4_000_000_017, -1]  # written before the sink is stopped
        assert all(before <= at <= time.monotonic() for _, at in lines)
        assert connections == 1
    finally:
        sink.send_signal(signal.SIGTERM)
        out, _ = sink.communicate(timeout=20)
    assert json.loads(out.strip().splitlines()[-1]) == {"messages": 2}


def test_matching_counts_missing_duplicate_and_unexpected_receipts() -> None:
    accepted = {1: 10.0, 2: 10.5, 3: 11.0}
    matched = match(accepted, [(2, 10.75), (1, 10.25), (2, 12.0), (-1, 12.5), (99, 13.0)])
    assert (matched.delivered, matched.missing, matched.duplicates, matched.unexpected) == (2, 1, 1, 2)
    assert matched.latencies == [0.25, 0.25]  # the first receipt of each counts
    assert matched.last_receipt == 10.75
    assert matched.latency_ms() == {"p50_ms": 250.0, "p90_ms": 250.0, "p99_ms": 250.0, "max_ms": 250.0}
    nothing = match({}, [])
    assert nothing.last_receipt is None
    assert math.isnan(nothing.latency_ms()["p50_ms"])


def test_receipt_lines_and_message_ids_survive_what_the_peers_and_the_file_do() -> None:
    assert complete_lines(b"1 2.5\n3 4.") == b"1 2.5\n"  # a line still being written waits
    assert parse_sink_lines("connect 1.0\n1 2.5\n-1 3.0\nconnect 4.0\n") == ([(1, 2.5), (-1, 3.0)], 2)
    relayed = (b"Received: from loadgen (localhost [127.0.0.1])\r\n\tby postfix.bench.localhost\r\n"
               + make_message("a@example.com", "b@example.net", 1_000_000_000_007))
    assert message_seq(relayed) == 1_000_000_000_007
    body_only = b"Subject: x\r\n\r\nMessage-ID: <5@loadgen.localhost>\r\n"
    assert message_seq(body_only) == -1  # only the header section counts


def test_sync_use_names_the_directory_or_the_file_s_directory_and_adds_up_the_time() -> None:
    log = ("101 fsync(7</w/relay-spool/tmp/0a.msg>) = 0 <0.001500>\n"
           "101 fsync(8</w/relay-spool/active>) = 0 <0.000250>\n"
           "102 fsync(8</w/relay-spool/active> <unfinished ...>\n"
           "101 fsync(7</w/relay-spool/tmp/0b.msg>) = 0 <0.001000>\n"
           "102 <... fsync resumed>) = 0 <0.004000>\n"
           "103 <... fsync resumed>) = 0 <9.000000>\n"  # its start was before this slice of the log
           "203 fdatasync(5</w/postfix/queue/incoming/4Xyz>) = 0 <0.002000>\n"
           "204 sync() = 0 <0.010000>\n")
    use = sync_use(log, "/w", is_dir=lambda path: not path.rpartition("/")[2][:1].isdigit())
    assert use.calls == {"fsync file in relay-spool/tmp": 2, "fsync dir relay-spool/active": 2,
                         "fdatasync file in postfix/queue/incoming": 1, "sync (no descriptor)": 1}
    assert {target: round(s, 6) for target, s in use.seconds.items()} == {
        "fsync file in relay-spool/tmp": 0.0025, "fsync dir relay-spool/active": 0.00425,
        "fdatasync file in postfix/queue/incoming": 0.002, "sync (no descriptor)": 0.01}


def _result(peer: str, round_: int, delivered: int, seconds: float, missing: int = 0) -> Result:
    return Result(peer, 100, 10, round_, {"messages": delivered + missing, "errors": 0}, delivered, missing,
                  0, 0, seconds, 0.0, {}, 0, {}, {}, 0.0, 0.0, 0)


def test_the_floors_take_the_medians_of_the_rounds_and_need_every_message_delivered() -> None:
    # Relay 200, 100, 180/s against Postfix 140, 150, 130/s: medians 180 / 140 = 1.29, met, though one relay
    # round is slower; the CPU floor (0 s here) is left aside.
    rounds = [_result(RELAY, 1, 200, 1.0), _result(RELAY, 2, 100, 1.0), _result(RELAY, 3, 180, 1.0),
              _result(POSTFIX, 1, 140, 1.0), _result(POSTFIX, 2, 150, 1.0), _result(POSTFIX, 3, 130, 1.0)]

    def end_to_end(results: list[Result]) -> Check:
        return next(row.check for row in checks(results) if row.check.floor.name == "end-to-end msgs/s")

    found = end_to_end(rounds)
    assert (round(found.median_ratio, 2), found.met, found.rounds_met) == (1.29, True, 2)
    assert found.rounds == (200 / 140, 100 / 150, 180 / 130)
    lost_one = [*rounds[:1], _result(RELAY, 2, 100, 1.0, missing=1), *rounds[2:]]
    assert not end_to_end(lost_one).met
