"""The spool contract: durable entries, recovery, per-recipient outcomes, corruption detected."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from mta_relay.spool import CorruptEntry, Spool, SpoolError, decode_entry


def _spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.ensure_dirs()
    return spool


async def _put(spool: Spool, message: bytes = b"Subject: hi\r\n\r\nbody\r\n", **kw) -> str:
    fields = {"mail_from": "a@example.com", "rcpts": ["b@example.net", "c@example.org"],
              "credential": "app", "client_ip": "127.0.0.1", "source": "smtp", "smtputf8": False, **kw}
    return (await spool.put(message=message, **fields)).queue_id


async def test_put_then_read_gives_exact_bytes_and_envelope(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    message = b"From: a@example.com\r\n\r\n.leading dot kept\r\n\x80binary\r\n"
    qid = await _put(spool, message)
    entry = spool.read(qid)
    assert entry.message == message
    assert entry.envelope.rcpts == ("b@example.net", "c@example.org")
    assert entry.envelope.queue_id == qid
    assert entry.envelope.size == len(message)
    assert spool.queue_ids() == [qid]
    assert not os.listdir(spool.tmp)


async def test_concurrent_puts_share_directory_fsyncs(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    ids = await asyncio.gather(*(_put(spool) for _ in range(40)))
    assert sorted(ids) == spool.queue_ids()
    # one file fsync each, plus directory fsyncs that group commit must keep below one per message
    assert spool.entries_written == 40
    assert 41 <= spool.fsyncs < 80


async def test_outcomes_and_pending_recipients(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    spool.record_outcome(qid, "b@example.net", "deferred", "451 try later")
    entry = spool.read(qid)
    assert spool.pending_rcpts(entry) == ["b@example.net", "c@example.org"]
    spool.record_outcome(qid, "b@example.net", "delivered", "250 ok")
    with (spool.active / f"{qid}.out").open("ab") as out:
        out.write(b'{"rcpt":"c@exa')  # torn append from a crash
    assert spool.pending_rcpts(entry) == ["c@example.org"]
    assert spool.outcomes(qid)["b@example.net"].status == "delivered"
    spool.remove(qid)
    assert spool.queue_ids() == []
    assert not os.listdir(spool.active)


async def test_recover_quarantines_half_written_and_corrupt(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    good, bad = await _put(spool), await _put(spool)
    (spool.tmp / "0000000000000000aaaaaaaaaa.msg").write_bytes(b"MTASPOOL 1 10 5\n{\"a")
    path = spool.active / f"{bad}.msg"
    path.write_bytes(path.read_bytes()[:-10])
    (spool.active / "0000000000000001bbbbbbbbbb.out").write_text("{}\n")
    report = Spool(spool.root).recover()
    assert report.entries == (good,)
    assert sorted(report.quarantined) == sorted(["0000000000000000aaaaaaaaaa.msg", f"{bad}.msg"])
    assert sorted(os.listdir(spool.active)) == [f"{good}.msg"]
    with pytest.raises(CorruptEntry):
        decode_entry((spool.quarantine_dir / f"{bad}.msg").read_bytes())


async def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool, b"Subject: x\r\n\r\nabcdef\r\n")
    path = spool.active / f"{qid}.msg"
    data = bytearray(path.read_bytes())
    data[data.index(b"abcdef")] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptEntry):
        spool.read(qid)


async def test_unwritable_spool_raises(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.tmp.rmdir()
    spool.tmp.write_bytes(b"")  # a file where the directory should be: every open fails, even for root
    with pytest.raises(SpoolError):
        await _put(spool)
    assert not spool.probe(0)


def test_queue_ids_reject_path_tricks(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    with pytest.raises(ValueError, match="not a queue id"):
        spool.read("../../etc/passwd")
