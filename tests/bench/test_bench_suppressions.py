"""The suppression benchmark's harness works: a tiny run of the real thing (two mta-relay processes as
peers, a relay with an empty list, two private Postfix instances with a ``check_recipient_access`` table)
imports every address into A and sees B hold all of them, refuses every listed address at RCPT on both
peers and accepts every other, times lookups in process, and the report has both peers' rows. No timing
assertions: speed is the benchmark's business (bench/README.md). Needs root and Debian's postfix and
dovecot-core; without them the test fails and says so, it never skips."""

from __future__ import annotations

import json
import os
import shutil

from bench.suppressions import run
from bench.suppressions.report import render, spread

N = 2000


def test_a_tiny_run_imports_propagates_refuses_and_reports_both_peers() -> None:
    assert os.geteuid() == 0, "the Postfix peer is a private instance that starts as root"
    for program in ("postmap", "dovecot"):
        assert shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin"), (
            f"{program} is missing: sudo apt-get install -y postfix dovecot-core (bench/README.md)")
    plan = run.Plan(N, import_repeats=1, rounds=1, rcpt_pairs=20, lookups=100, lookup_repeats=2, batch=500,
                    cap_seconds=60, stall_seconds=20)

    done = run.execute(plan, progress=lambda _line: None)

    assert [(r.peer, r.repeat) for r in done.imports] == [("mta-relay", 1), ("Postfix", 1)]
    relay, postfix = done.imports
    assert relay.entries == postfix.entries == N
    assert relay.reach_peer_seconds is not None
    assert relay.reach_peer_seconds >= relay.seconds > 0
    assert all(relay.rss_before_kib[m] > 0 and relay.rss_after_kib[m] > 0 for m in "AB"), relay
    assert relay.disk_bytes["A db"] > 0
    assert relay.disk_bytes["B db"] > 0
    assert postfix.disk_bytes["hash .db"] > 0
    peers = [run.RELAY_FULL, run.POSTFIX_FULL, run.RELAY_EMPTY, run.POSTFIX_EMPTY]
    assert [r.peer for r in done.rounds] == peers  # refusals and acceptances were checked per RCPT
    assert all(r.listed_us["n"] == r.unlisted_us["n"] == 20 and r.rss_in_session_kib > 0 for r in done.rounds)
    assert done.replies[run.RELAY_FULL].startswith("550 5.7.1")
    assert done.replies[run.POSTFIX_FULL].startswith("554 5.7.1")
    assert set(done.replies) == {run.RELAY_FULL, run.POSTFIX_FULL}  # an empty list refuses nothing
    assert {name: (len(t.hit_us), len(t.miss_us)) for name, t in done.lookups.items()} == {
        "full (B's file)": (2, 2), "empty": (2, 2)}
    assert not done.workdir.exists()  # not kept: configs, tokens, databases are gone

    page = render(done, {"cpus": "2"}, plan)
    assert "## Summary" in page
    assert "| mta-relay | Postfix |" in page
    assert "no propagation" in page
    json.dumps(run.as_json(done))  # the raw file holds plain values


def test_the_addresses_repeat_across_runs_and_never_within_one() -> None:
    first = run.addresses(0, 5000)
    assert run.addresses(0, 5000) == first
    assert len(set(first)) == len(first)
    assert not set(run.addresses(5000, 100)) & set(first)
    assert all(a.count("@") == 1 and a == a.lower() for a in first)


def test_the_spread_is_the_median_with_min_and_max() -> None:
    assert spread([3.0, 1.0, 2.0]) == "2.0 (1.0-3.0)"
    assert spread([5.0]) == "5.0"
    assert spread([]) == "—"
