"""The benches' rounds, figures over rounds, ratios and floors (bench.frontdoor.rounds), the CPU limits'
pure parts (bench.frontdoor.cpulimit), and the front door's floors computed from the rounds of a run."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.frontdoor.cpulimit import (
    AFFINITY,
    V1,
    V2,
    CpuGroup,
    CpuLimits,
    cpu_max,
    first_cpus,
    parse_mounts,
    usage_usec,
)
from bench.frontdoor.peers import CEILING, POSTFIX, RELAY
from bench.frontdoor.report import Result, checks
from bench.frontdoor.rounds import (
    Check,
    Floor,
    FloorRow,
    Schedule,
    Spread,
    check,
    floor_table,
    parse_cpus,
    ratio_of_medians,
    rotation,
    round_ratios,
)

unit = pytest.mark.unit


@unit
def test_the_order_rotates_so_every_peer_takes_every_place() -> None:
    orders = ["".join(rotation("ABC", turn)) for turn in range(4)]
    assert orders == ["ABC", "BCA", "CAB", "ABC"]
    assert rotation(["relay", "postfix"], 1) == ["postfix", "relay"]
    assert rotation([], 3) == []


@unit
def test_a_figure_over_rounds_is_its_median_and_spread_without_empty_runs() -> None:
    spread = Spread.of([610.0, 580.0, math.nan, 640.0, 600.0])
    assert spread == Spread(605.0, 580.0, 640.0, 4)
    assert spread.show() == "605 (580\u2013640)"
    assert Spread.of([2.345]).show(2) == "2.35"  # one round: no spread to show
    assert Spread.of([math.nan]) is None


@unit
def test_ratios_come_from_the_medians_and_from_each_round_both_peers_ran() -> None:
    relay = {1: 600.0, 2: 300.0, 3: 660.0}
    postfix = {1: 500.0, 2: 500.0, 4: 400.0}
    assert ratio_of_medians(relay.values(), postfix.values()) == 600 / 500
    assert round_ratios(relay, postfix) == [1.2, 0.6]  # round 3 and 4 lack a partner
    assert round_ratios({1: 1.0}, {1: 0.0}) == []
    assert math.isnan(ratio_of_medians([], [1.0]))


@unit
def test_a_floor_is_decided_on_the_medians_with_the_rounds_beside_it() -> None:
    at_least = Floor("msgs/s", POSTFIX, 1.2)
    at_most = Floor("server CPU ms/msg", POSTFIX, 0.6, at_least=False)
    found = check(at_least, {1: 600.0, 2: 700.0, 3: 500.0}, {1: 500.0, 2: 500.0, 3: 500.0})
    assert (found.median_ratio, found.rounds, found.met, found.rounds_met) == (1.2, (1.2, 1.4, 1.0), True, 2)
    assert not Check(at_least, 1.5, (1.5,), clean=False).met  # lost mail or client errors
    assert at_most.holds(0.6)
    assert not at_most.holds(0.61)
    assert not at_most.holds(math.nan)
    assert at_most.describe() == "relay server CPU ms/msg ≤ 0.6 x Postfix"
    table = floor_table([FloorRow(1, "100 per connection", 10, found),
                         FloorRow(2, "100 per connection", 10, Check(at_least, 1.1, (1.0, 1.3)))])
    assert ("| relay msgs/s ≥ 1.2 x Postfix | 1 core | 100 per connection | 10 | 1.20 | 1.00\u20131.40 "
            "| 2 of 3 | yes |") in table
    assert table[-1] == ("- relay msgs/s ≥ 1.2 x Postfix: **not met** (holds in 1 of 2 scenarios checked; it "
                         "must hold in all).")


@unit
def test_cpu_limits_are_parsed_in_order_once_each() -> None:
    assert parse_cpus("1,2") == (1, 2)
    assert parse_cpus("2, 1,2,none") == (2, 1, None)
    for bad in ("0", "1.5", "", "two"):
        with pytest.raises(ValueError, match="CPU limit"):
            parse_cpus(bad)


@unit
def test_cgroup_limits_and_usage_are_read_and_written_in_the_kernel_s_formats(tmp_path: Path) -> None:
    assert cpu_max(1) == "100000 100000"
    assert cpu_max(2) == "200000 100000"
    hybrid = ("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
              "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"
              "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n")
    mounts = parse_mounts(hybrid)
    assert [(str(m.path), m.fstype, "cpuacct" in m.options) for m in mounts] == [
        ("/sys/fs/cgroup/cpu,cpuacct", "cgroup", True), ("/sys/fs/cgroup/unified", "cgroup2", False)]
    assert usage_usec("usage_usec 1500000\nuser_usec 1000000\n") == 1_500_000
    assert first_cpus({3, 0, 1}, 2) == "0,1"
    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (tmp_path / "cpuacct.usage").write_text("1250000000\n")
    assert CpuGroup("a", 1, V2, usage=tmp_path / "cpu.stat").usage_seconds() == 2.5
    assert CpuGroup("b", 1, V1, usage=tmp_path / "cpuacct.usage").usage_seconds() == 1.25
    assert CpuGroup("c", 1, AFFINITY, cpu_list="0").usage_seconds() is None
    assert CpuGroup("c", 1, AFFINITY, cpu_list="0").wrap(["x"]) == ["taskset", "-c", "0", "x"]


def test_the_peer_s_first_process_joins_its_group_before_it_starts(tmp_path: Path) -> None:
    """The wrapper writes its pid and execs the peer: the pid joined is the peer's own, so all it forks
    is inside the limit (a file stands in for cgroup.procs)."""
    procs = (tmp_path / "a procs", tmp_path / "b procs")
    argv = CpuGroup("p", 1, V1, procs).wrap([sys.executable, "-c", "import os; print(os.getpid())"])
    pid = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    assert [p.read_text().strip() for p in procs] == [pid, pid]


def _run(peer: str, round_: int, rate: float, cpu_seconds: float, *, cpus: int | None = 1,
         per_connection: int = 100, clients: int = 10, errors: int = 0) -> Result:
    """1,000 messages: ``cpu_seconds`` is also ms per message."""
    summary = {"messages": 1000, "msgs_per_s": rate, "p50_ms": 1.0, "p99_ms": 2.0, "errors": errors,
               "client_cpu_s": 0.5}
    return Result(peer, per_connection, clients, summary, None, cpu_seconds, round=round_, cpus=cpus)


@unit
def test_the_front_door_floors_pair_the_peers_by_limit_scenario_and_round() -> None:
    results = []
    rates = [(600, 500, 700), (700, 450, 800), (500, 500, 750)]  # relay, Postfix, ceiling per round
    for round_, (relay, postfix, ceiling) in enumerate(rates, 1):
        results += [_run(RELAY, round_, relay, 1.0), _run(POSTFIX, round_, postfix, 2.0),
                    _run(CEILING, round_, ceiling, 0.5)]
        # Another scenario (no ceiling floor there) and another limit, the relay with a client error.
        results += [_run(RELAY, round_, 100, 1.0, clients=50), _run(POSTFIX, round_, 100, 1.0, clients=50),
                    _run(RELAY, round_, 900, 1.0, cpus=2, errors=1), _run(POSTFIX, round_, 500, 2.0, cpus=2)]
    rows = {(row.check.floor.describe(), row.cpus, row.clients): row.check for row in checks(results)}
    throughput = rows[("relay msgs/s ≥ 1.2 x Postfix", 1, 10)]
    assert (throughput.median_ratio, throughput.rounds, throughput.met) == (1.2, (1.2, 700 / 450, 1.0), True)
    assert rows[("relay server CPU ms/msg ≤ 0.6 x Postfix", 1, 10)].median_ratio == 0.5
    assert rows[("relay msgs/s ≥ 0.8 x the aiosmtpd ceiling", 1, 10)].median_ratio == 600 / 750
    assert ("relay msgs/s ≥ 0.8 x the aiosmtpd ceiling", 1, 50) not in rows  # only at 100 x 10
    assert not rows[("relay msgs/s ≥ 1.2 x Postfix", 2, 10)].met  # 1.8, but a client error
    assert not rows[("relay msgs/s ≥ 1.2 x Postfix", 1, 50)].met


@unit
def test_without_a_v2_cpu_controller_the_limit_is_cfs_quota_in_the_v1_hierarchies(tmp_path: Path) -> None:
    unified, cpu, acct = tmp_path / "unified", tmp_path / "cpu", tmp_path / "cpuacct"
    for path in (unified, cpu, acct):
        path.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    mounts = (f"cgroup {cpu} cgroup rw,relatime,cpu 0 0\ncgroup {acct} cgroup rw,relatime,cpuacct 0 0\n"
              f"cgroup2 {unified} cgroup2 rw,relatime 0 0\n")
    limits = CpuLimits.detect(mounts)
    assert limits.kind == V1
    assert f"{unified} (cgroup v2) has no cpu controller" in limits.note
    assert limits.group("relay", None) is None  # no limit: no group
    group = limits.group("relay", 2)
    assert group is not None
    tag = group.procs[0].parent.parent.name  # the run's own parent group, mta-bench-<pid>
    assert group.procs == (cpu / tag / "relay/cgroup.procs", acct / tag / "relay/cgroup.procs")
    assert (cpu / tag / "relay/cpu.cfs_quota_us").read_text() == "200000"
    assert (cpu / tag / "relay/cpu.cfs_period_us").read_text() == "100000"
    for control in (cpu / tag / "relay").iterdir():  # the kernel's files go with the group
        control.unlink()
    assert limits.close(wait_seconds=0) == []
    assert [list(p.iterdir()) for p in (cpu, acct)] == [[], []]


@unit
def test_the_schedule_rotates_the_peers_and_names_what_the_budget_leaves_out() -> None:
    now = [0.0]
    schedule = Schedule[str](2, budget_seconds=10, clock=lambda: now[0])
    made = []
    for run in schedule.runs([(1, 10), (100, 1)], ["A", "B"], str, "1 core"):
        made.append(run)
        now[0] += 3  # each run takes 3 s: the budget is spent after the fourth
    assert made == [(1, 10, 1, "A"), (1, 10, 1, "B"), (1, 10, 2, "B"), (1, 10, 2, "A")]
    assert schedule.turn == 4
    assert schedule.skipped[0] == "A 1 core 100/conn x 1 round 1"
    assert len(schedule.skipped) == 4
    assert (schedule.note() or "").startswith("Time budget (10 s) spent: 4 timed runs not run")
