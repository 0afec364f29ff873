"""What survives a restart, the pure and file-level parts: the spool's retry records, the state files'
format and atomic write, the rate window and quota counts carried across a restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mta_relay.spool import RetryState, Spool


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
    assert set(record) == {"attempts", "next_at", "at"}
