"""What survives a restart, the pure and file-level parts: the spool's retry records, the state files'
format and atomic write, the rate window and quota counts carried across a restart."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from mta_relay import state_files
from mta_relay.config import Quota
from mta_relay.quota import FORGET_SECONDS, Count, QuotaTracker
from mta_relay.ratelimit import SlidingWindowLimit
from mta_relay.spool import RetryState, Spool

pytestmark = pytest.mark.unit


async def _put(spool: Spool) -> str:
    return (await spool.put(mail_from="a@example.com", rcpts=["b@example.net", "c@example.org"],
                            credential="app", client_ip="127.0.0.1", source="smtp", smtputf8=False,
                            message=b"Subject: hi\r\n\r\nbody\r\n")).queue_id


def _spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.recover()
    return spool


async def test_retry_state_is_none_until_a_deferral_then_the_last_record_wins(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    assert spool.retry_state(qid) is None
    before = spool.fsyncs
    spool.record_retry(qid, 1, 1_800_000_000.5)
    spool.record_outcome(qid, "b@example.net", "delivered", "250 ok")
    spool.record_retry(qid, 2, 1_800_000_900.25)
    assert spool.fsyncs - before == 3  # each record is durable before delivery acts on it
    state = spool.retry_state(qid)
    assert state is not None
    assert (state.attempts, state.next_at) == (2, 1_800_000_900.25)
    # Outcomes and retry records share the file without confusing one another.
    assert list(spool.outcomes(qid)) == ["b@example.net"]
    assert spool.pending_rcpts(spool.read(qid)) == ["c@example.org"]


async def test_retry_state_written_by_another_process_is_seen_and_survives_recovery(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    other = Spool(spool.root)  # another process's view: it never ran recover or index_outcomes
    other.record_retry(qid, 3, 1_800_000_000.0)
    state = spool.retry_state(qid)
    assert state is not None
    assert state == RetryState(3, 1_800_000_000.0, state.at)
    restarted = _spool(tmp_path)
    assert restarted.retry_state(qid).attempts == 3  # type: ignore[union-attr]
    assert (spool.outcomes_dir / f"{qid}.out").stat().st_mode & 0o777 == 0o600


async def test_a_torn_last_retry_line_falls_back_to_the_one_before(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    spool.record_retry(qid, 1, 1_800_000_000.0)
    path = spool.outcomes_dir / f"{qid}.out"
    path.write_bytes(path.read_bytes() + b'{"attempts":2,"next_')  # a crash mid-append
    assert spool.retry_state(qid).attempts == 1  # type: ignore[union-attr]


async def test_removal_takes_the_retry_record_with_the_entry(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    spool.record_retry(qid, 1, 1_800_000_000.0)
    spool.remove(qid)
    assert spool.retry_state(qid) is None
    assert os.listdir(spool.outcomes_dir) == []


def test_retry_line_format(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.ensure_dirs()
    qid = "0" * 26
    spool.record_retry(qid, 2, 1_800_000_000.5)
    [line] = (spool.outcomes_dir / f"{qid}.out").read_text().splitlines()
    record = json.loads(line)
    assert (record["attempts"], record["next_at"]) == (2, 1_800_000_000.5)
    assert set(record) == {"attempts", "next_at", "at"}  # no replies: the line as before they existed
    spool.record_retry(qid, 3, 1_800_000_060.0, {"b@example.net": "451 4.3.0 later"})
    record = json.loads((spool.outcomes_dir / f"{qid}.out").read_text().splitlines()[-1])
    assert record["replies"] == {"b@example.net": "451 4.3.0 later"}


async def test_deferral_replies_ride_on_the_retry_lines_latest_per_recipient(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    spool.record_retry(qid, 1, 1_800_000_000.0, {"b@example.net": "451 4.3.0 later",
                                                 "c@example.org": "452 4.2.2 full"})
    first = spool.retry_state(qid)
    spool.record_retry(qid, 2, 1_800_000_900.0, {"c@example.org": "421 4.7.0 slow down"})
    state = spool.retry_state(qid)
    assert first is not None
    assert state is not None
    assert state.attempts == 2
    # Each line names the recipients of its attempt; the others keep their last reply and its time.
    assert state.replies == {"b@example.net": ("451 4.3.0 later", first.at),
                             "c@example.org": ("421 4.7.0 slow down", state.at)}


async def test_retry_lines_without_replies_or_with_bad_ones_still_read(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    path = spool.outcomes_dir / f"{qid}.out"
    path.write_bytes(b'{"attempts":1,"next_at":1800000000.0,"at":1799999990.0}\n')  # before replies existed
    assert spool.retry_state(qid) == RetryState(1, 1_800_000_000.0, 1_799_999_990.0)
    path.write_bytes(path.read_bytes() + b'{"attempts":2,"next_at":1800000100.0,"at":1800000000.0,'
                     b'"replies":{"b@example.net":["not","text"],"c@example.org":"451 later"}}\n')
    state = spool.retry_state(qid)
    assert state is not None
    assert state.attempts == 2
    assert state.replies == {"c@example.org": ("451 later", 1_800_000_000.0)}


# --- rate window --------------------------------------------------------------------------------------
def test_the_rate_window_crosses_a_restart_as_wall_clock_times() -> None:
    before = SlidingWindowLimit(3, 60)
    assert all(before.try_acquire(t) for t in (100.0, 110.0, 120.0))
    saved = before.wall_starts(now=130.0, wall_now=1_800_000_000.0)
    assert saved == [1_799_999_970.0, 1_799_999_980.0, 1_799_999_990.0]
    # The restarted process: another monotonic origin, 5 s of wall time later.
    after = SlidingWindowLimit(3, 60)
    after.restore(saved, now=7.0, wall_now=1_800_000_005.0)
    assert not after.try_acquire(7.0)
    assert after.next_free(7.0) == 7.0 + 25.0  # the first start leaves the window 60 s after it was made
    assert after.try_acquire(32.0)


def test_restore_drops_starts_older_than_the_period_and_clamps_future_ones() -> None:
    limit = SlidingWindowLimit(2, 10)
    limit.restore([1_000.0, 1_095.0, 1_200.0], now=50.0, wall_now=1_100.0)  # old, recent, future
    assert limit.starts == [45.0, 50.0]


def test_a_lowered_limit_waits_until_enough_starts_have_aged_out() -> None:
    limit = SlidingWindowLimit(1, 10, starts=[1.0, 2.0, 3.0])
    assert limit.next_free(4.0) == 13.0


# --- state files ------------------------------------------------------------------------------------
def test_state_files_round_trip_and_are_written_atomically_with_private_modes(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    path = state_files.rate_window_path(root)
    state_files.write_atomic(path, state_files.encode_rate_window([2.0, 1.0]))
    assert state_files.load(path, state_files.decode_rate_window, []) == [1.0, 2.0]
    assert path.stat().st_mode & 0o777 == 0o600
    assert state_files.state_dir(root).stat().st_mode & 0o777 == 0o700
    quota = state_files.quota_path(root)
    counts = ({"app": Count(3600.0, 3, 3700.5, "2001:db8::1")}, {"mta-1": {"app": Count(3600.0, 2)}})
    state_files.write_atomic(quota, state_files.encode_quota(counts))
    assert state_files.load(quota, state_files.decode_quota, ({}, {})) == counts
    assert sorted(os.listdir(state_files.state_dir(root))) == ["quota.json", "ratelimit.json"]  # no temp


def test_a_missing_or_malformed_state_file_reads_as_a_fresh_start(tmp_path: Path) -> None:
    path = tmp_path / "quota.json"
    assert state_files.load(path, state_files.decode_quota, ({}, {})) == ({}, {})
    for bad in (b"{", b"[]", b'{"version":3,"own":{},"peers":{}}', b'{"version":1,"used":{"a":[1,2]}}',
                b'{"version":1,"used":{"a":[1,true,3]}}', b'{"version":2,"own":{"a":[1,2,3]},"peers":{}}',
                b'{"version":2,"own":{},"peers":[]}', b'{"version":2,"own":{"a":[1,-2,3,""]},"peers":{}}'):
        path.write_bytes(bad)
        assert state_files.load(path, state_files.decode_quota, ({}, {})) == ({}, {})


async def test_debounced_writes_at_once_then_at_most_once_an_interval_and_on_flush(tmp_path: Path) -> None:
    values = [0]
    saver = state_files.Debounced(tmp_path / "state" / "n.json",
                                  lambda: json.dumps({"n": values[0]}).encode(), interval=0.5)
    values[0] = 1
    saver.changed()
    await asyncio.sleep(0.2)
    assert json.loads(saver.path.read_text()) == {"n": 1}  # the first change: written at once
    for n in range(2, 6):
        values[0] = n
        saver.changed()
    await asyncio.sleep(0.1)
    assert json.loads(saver.path.read_text()) == {"n": 1}  # batched until the interval is over
    await asyncio.sleep(0.6)
    assert json.loads(saver.path.read_text()) == {"n": 5}
    assert saver.writes == 2
    values[0] = 6
    saver.changed()
    await saver.flush()
    assert json.loads(saver.path.read_text()) == {"n": 6}
    await saver.flush()  # nothing changed: nothing written
    assert saver.writes == 3


# --- quota counts -------------------------------------------------------------------------------------
def test_quota_counts_and_peers_counts_cross_a_restart_and_old_ones_are_dropped() -> None:
    now = [3600.0 * 100 + 5]
    changes: list[int] = []
    quota = Quota(messages=6, period="Hour")
    before = QuotaTracker(lambda: now[0], on_change=lambda: changes.append(1))
    assert all(before.charge("app", quota) for _ in range(3))
    before.record_use("app", "192.0.2.7")
    assert before.charge("old", quota)
    before.merge("mta-1", {"app": Count(3600.0 * 100, 2)}, full=True)
    assert len(changes) == 6
    now[0] += FORGET_SECONDS - 100
    before.charge("app", quota)  # a new period, so a new count
    now[0] += 200  # "old" was last used longer ago than FORGET_SECONDS
    saved = state_files.decode_quota(state_files.encode_quota(before.snapshot()))
    assert set(saved[0]) == {"app"}
    assert saved[0]["app"].sent == 1
    assert saved[0]["app"].last_from == "192.0.2.7"
    assert saved[1] == {}  # the peer's count is as old as "old"'s
    now[0] = 3600.0 * 100 + 10
    after = QuotaTracker(lambda: now[0], saved=state_files.decode_quota(state_files.encode_quota(
        ({"app": Count(3600.0 * 100, 3)}, {"mta-1": {"app": Count(3600.0 * 100, 2)}}))))
    assert after.charge("app", quota)
    assert not after.charge("app", quota)  # 3 before the restart + 2 of the peer + 1 after = the quota


def test_a_version_1_quota_file_still_loads_by_calendar_period() -> None:
    old = json.dumps({"version": 1, "used": {"app": [100, 3, 3600], "monthly": [10, 4, 30 * 86400]}})
    own, peers = state_files.decode_quota(old.encode())
    assert (own["app"].start, own["app"].sent) == (360000.0, 3)
    assert peers == {}
    tracker = QuotaTracker(lambda: 360000.0 + 5, saved=(own, peers))
    assert tracker.used("app", Quota(messages=9, period="Hour")) == 3
    assert tracker.used("monthly", Quota(messages=9, period="Month")) == 0  # 30-day windows: not a month
