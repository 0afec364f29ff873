"""The hand-off benchmark's harness works: a tiny run of the real thing (two mta-relay processes sharing
one certificate and peer token, a sending and a receiving private Postfix, the load generator) moves
every queued message from sender to receiver through each peer and accounts for it, and the report has
both peers' rows. No timing assertions: speed is the benchmark's business (bench/README.md). Needs
root and Debian's postfix and dovecot-core; without them the test fails and says so, it never skips."""

from __future__ import annotations

import json
import os
import shutil

from bench.frontdoor.peers import POSTFIX, RELAY
from bench.handoff import run
from bench.handoff.report import Result, render, summary_table

N = 20


def test_a_tiny_run_moves_every_message_through_both_peers_and_reports_both() -> None:
    assert os.geteuid() == 0, "the Postfix peer is a private instance that starts as root"
    for program in ("postconf", "postqueue", "dovecot"):
        assert shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin"), (
            f"{program} is missing: sudo apt-get install -y postfix dovecot-core (bench/README.md)")
    plan = run.Plan(sizes=(N,), repeats=1, stall_seconds=20, cap_seconds=40)

    done = run.execute(plan, progress=lambda _line: None)

    assert [(r.peer, r.size, r.repeat) for r in done.results] == [(RELAY, N, 1), (POSTFIX, N, 1)]
    for r in done.results:
        assert (r.moved, r.received, r.left_on_source, r.duplicates) == (N, N, 0, 0), r
        assert r.complete
        assert r.fill_seconds > 0
        assert r.applied_seconds is not None
        assert 0 <= r.applied_seconds <= r.source_empty_seconds
        assert r.rate > 0
        assert r.sender_cpu_seconds > 0
        assert r.rss_kib
        assert all(kib > 0 for kib in r.rss_kib.values()), r.rss_kib
    relay = done.results[0]
    assert relay.failures == 0
    assert relay.receiver_all_seconds is not None
    assert relay.receiver_all_seconds > 0
    assert set(relay.rss_kib) == {"A front door", "A delivery", "B front door", "B delivery"}
    assert not done.workdir.exists()  # not kept: configs, tokens, queues are gone

    table = render(done.results, {"cpus": "2"}, plan.bounds(), done.notes)
    rows = summary_table(done.results)[2:]
    assert [row.split(" | ")[1] for row in rows] == [RELAY, POSTFIX]
    assert all(row.endswith("| yes |") for row in rows), rows
    assert "## What each side does" in table
    assert "## Every run" in table


def test_the_report_gives_the_median_and_the_spread_of_the_repeats() -> None:
    def result(peer: str, seconds: float) -> Result:
        return Result(peer, 1000, 1, 1.0, 0.5, seconds, None, 1000, 1000, 0, 0, 0, 1.0, 1.0, {"x": 2048}, "")

    results = [result(RELAY, s) for s in (1.0, 2.0, 4.0)] + [result(POSTFIX, 5.0)]
    rows = summary_table(results)[2:]
    assert "**500 (250-1000)**" in rows[0]  # msgs/s: 1000 / (2.0, 4.0, 1.0) s
    assert "| 2.00 (1.00-4.00) |" in rows[0]
    assert "**200**" in rows[1]  # one repeat: no spread
    json.dumps([r.__dict__ for r in results])  # the raw file holds plain values
