"""Pure parts of the SMTP serving processes: their count from the cgroup's CPU limit and the affinity
mask, and the one /metrics exposition summed over the processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mta_relay.workers import count
from mta_relay.workers.metrics import merged
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("cpu_max", "limit"), [("max 100000", None), ("200000 100000", 2.0),
                                                ("150000 100000", 1.5), ("50000 100000", 0.5)])
def test_cpu_max_lines(cpu_max: str, limit: float | None) -> None:
    assert count.cpu_limit(cpu_max) == limit


@pytest.mark.parametrize(("limit", "cpus", "workers"), [(None, 2, 2), (None, 64, count.MAX_WORKERS),
                                                        (0.5, 4, 1), (1.5, 4, 2), (4.0, 2, 2), (3.0, 8, 3)])
def test_sized_from_the_limit_and_the_usable_cpus(limit: float | None, cpus: int, workers: int) -> None:
    assert count.sized(limit, cpus) == workers


def test_the_tightest_limit_on_the_way_to_the_root(tmp_path: Path) -> None:
    """Kubernetes writes the container's limit and the pod's: the smaller one holds."""
    root = tmp_path / "cgroup"
    container = root / "kubepods" / "pod1" / "relay"
    container.mkdir(parents=True)
    (root / "kubepods" / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "pod1" / "cpu.max").write_text("300000 100000\n")
    (container / "cpu.max").write_text("150000 100000\n")
    proc = tmp_path / "cgroup-of-self"
    proc.write_text("0::/kubepods/pod1/relay\n")
    assert count.cgroup_limit(root, proc) == 1.5
    proc.write_text("0::/kubepods\n")
    assert count.cgroup_limit(root, proc) is None
    proc.write_text("4:memory:/x\n")  # cgroup v1 only: nothing to read
    assert count.cgroup_limit(root, proc) is None


def test_a_cgroup_v1_cfs_quota_counts_too(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    group = root / "cpu,cpuacct" / "bench"
    group.mkdir(parents=True)
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    (group / "cpu.cfs_quota_us").write_text("100000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup-of-self"
    proc.write_text("4:memory:/bench\n2:cpu,cpuacct:/bench\n0::/\n")
    assert count.cgroup_limit(root, proc) == 1.0
    proc.write_text("2:cpu,cpuacct:/\n")
    assert count.cgroup_limit(root, proc) is None


def _exposition(accepted: float, reason: str, sessions: float, ready: float) -> bytes:
    registry = CollectorRegistry()
    Counter("mta_messages_accepted", "Messages accepted", ["source"], registry=registry).labels("smtp").inc(
        accepted)
    Counter("mta_messages_rejected", "Refused", ["source", "reason"], registry=registry).labels(
        "smtp", reason).inc()
    Gauge("mta_smtp_sessions", "Open sessions", registry=registry).set(sessions)
    Gauge("mta_ready", "Ready", registry=registry).set(ready)
    return generate_latest(registry)


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples
            if not s.name.endswith("_created")}


def test_the_serving_processes_counts_are_summed_and_the_rest_is_the_first_processes() -> None:
    own = _exposition(accepted=3, reason="quota", sessions=2, ready=1)
    other = _exposition(accepted=4, reason="auth_required", sessions=5, ready=0).decode()
    samples = _samples(merged(own, [other, other]))
    assert samples[("mta_messages_accepted_total", (("source", "smtp"),))] == 11
    assert samples[("mta_smtp_sessions", ())] == 12
    assert samples[("mta_ready", ())] == 1  # the first process's alone
    assert samples[("mta_messages_rejected_total", (("reason", "quota"), ("source", "smtp")))] == 1
    # a label set only the other processes have seen is there too
    assert samples[("mta_messages_rejected_total", (("reason", "auth_required"), ("source", "smtp")))] == 2


def test_nothing_to_merge_leaves_the_exposition_as_it_was() -> None:
    own = _exposition(accepted=3, reason="quota", sessions=2, ready=1)
    assert _samples(merged(own, [])) == _samples(own)
