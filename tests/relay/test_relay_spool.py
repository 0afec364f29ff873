"""The spool contract: durable entries in reused slots, one data sync per message, recovery,
per-recipient outcomes, corruption detected."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from mta_relay.spool import SLOT_BATCH, SLOT_RANGE, CorruptEntry, Spool, SpoolError, decode_entry


def _spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.recover()
    return spool


def _nonempty_slots(spool: Spool) -> list[str]:
    return sorted(p.name for p in spool.slots.iterdir() if p.stat().st_size)


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
    assert spool.path(qid).parent == spool.slots
    assert len(_nonempty_slots(spool)) == 1


async def test_a_large_entry_and_an_emptied_slot_read_as_path_read_bytes_would(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    message = os.urandom(3 << 20)  # past one read of a small buffer: read to the end of the file
    qid = await _put(spool, message)
    assert spool.read(qid).message == message
    os.truncate(spool.path(qid), 0)  # emptied under us (removed, and the slot not yet reused)
    with pytest.raises(FileNotFoundError):
        spool.read(qid)
    assert spool.queue_ids() == []  # forgotten, as for a stale hand-over
    with pytest.raises(FileNotFoundError):
        spool.read(qid)


async def test_one_data_sync_per_message_and_slots_are_reused(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    before, files = spool.fsyncs, sorted(os.listdir(spool.slots))
    ids = await asyncio.gather(*(_put(spool) for _ in range(40)))
    assert sorted(ids) == spool.queue_ids()
    assert spool.entries_written == 40
    assert spool.fsyncs - before == 40  # the slots were made durable ahead of need: no directory sync
    for qid in ids:
        spool.remove(qid)  # no sync: a lost removal can only bring back a delivered message
    assert spool.fsyncs - before == 40
    assert _nonempty_slots(spool) == []
    await asyncio.gather(*(_put(spool) for _ in range(40)))
    assert sorted(os.listdir(spool.slots)) == files  # the same files again, none created


async def test_a_full_spool_grows_by_durable_batches(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    count = SLOT_BATCH + 5
    before = spool.fsyncs
    ids = await asyncio.gather(*(_put(spool) for _ in range(count)))
    assert len(os.listdir(spool.slots)) == 2 * SLOT_BATCH
    # each new slot file and the directory synced once, before any message went in
    assert spool.fsyncs - before == count + SLOT_BATCH + 1
    assert sorted(Spool(spool.root).recover().entries) == sorted(ids)


async def test_a_slot_that_cannot_be_created_is_skipped_not_retried(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    await asyncio.gather(*(_put(spool) for _ in range(SLOT_BATCH)))  # the first batch is in use
    (spool.slots / f"{SLOT_BATCH:08d}").write_bytes(b"stray")  # where the next new slot would go
    with pytest.raises(SpoolError):
        await _put(spool)
    qid = await _put(spool)
    assert spool.read(qid).envelope.queue_id == qid


async def test_outcomes_and_pending_recipients(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    spool.record_outcome(qid, "b@example.net", "deferred", "451 try later")
    entry = spool.read(qid)
    assert spool.pending_rcpts(entry) == ["b@example.net", "c@example.org"]
    spool.record_outcome(qid, "b@example.net", "delivered", "250 ok")
    with (spool.outcomes_dir / f"{qid}.out").open("ab") as out:
        out.write(b'{"rcpt":"c@exa')  # torn append from a crash
    assert spool.pending_rcpts(entry) == ["c@example.org"]
    assert spool.outcomes(qid)["b@example.net"].status == "delivered"
    spool.remove(qid)
    assert spool.queue_ids() == []
    assert not os.listdir(spool.outcomes_dir)
    assert _nonempty_slots(spool) == []


async def test_recover_quarantines_torn_and_corrupt_keeps_the_rest(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    good, bad, done = await _put(spool), await _put(spool), await _put(spool)
    path = spool.path(bad)
    path.write_bytes(path.read_bytes()[:-10])  # torn: a write cut short (never acknowledged)
    spool.remove(done)
    free = spool.path(await _put(spool)).name
    garbage = spool.slots / free
    garbage.write_bytes(b"MTASPOOL 1 10 5\n{\"a")  # torn before its queue id was written
    (spool.outcomes_dir / "0000000000000001bbbbbbbbbb.out").write_text("{}\n")
    report = Spool(spool.root).recover()
    assert report.entries == (good,)
    assert sorted(report.quarantined) == sorted([f"{bad}.msg", f"slot-{free}.msg"])
    assert _nonempty_slots(spool) == [spool.path(good).name]
    assert not os.listdir(spool.outcomes_dir)
    with pytest.raises(CorruptEntry):
        decode_entry((spool.quarantine_dir / f"{bad}.msg").read_bytes())
    again = Spool(spool.root)
    again.recover()
    assert again.read(good).envelope.queue_id == good
    assert again.fsyncs == 0  # free slots left from before: nothing to create


async def test_a_slot_truncation_lost_to_a_crash_brings_the_message_back(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    data = spool.path(qid).read_bytes()
    slot = spool.path(qid)
    spool.remove(qid)
    slot.write_bytes(data)  # what the disk holds if the machine died before the truncation reached it
    assert Spool(spool.root).recover().entries == (qid,)  # a duplicate at worst, never a loss


async def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool, b"Subject: x\r\n\r\nabcdef\r\n")
    path = spool.path(qid)
    data = bytearray(path.read_bytes())
    data[data.index(b"abcdef")] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptEntry):
        spool.read(qid)


async def test_unwritable_spool_raises(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    for slot in spool.slots.iterdir():
        slot.unlink()
    spool.slots.rmdir()
    spool.slots.write_bytes(b"")  # a file where the directory should be: every open fails, even for root
    with pytest.raises(SpoolError):
        await _put(spool)
    assert not spool.probe(0)
    assert spool.queue_ids() == []


def test_queue_ids_reject_path_tricks(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    with pytest.raises(ValueError, match="not a queue id"):
        spool.read("../../etc/passwd")


async def test_a_stale_hand_over_reads_as_gone_and_never_touches_the_slot_s_new_entry(tmp_path: Path) -> None:
    # As in the delivery process after a restart: handed again an entry it already removed, whose slot
    # the front door has since given to a new message (or not yet: then the slot is empty).
    front = _spool(tmp_path)
    old = await _put(front)
    slot = front.slot_of(old)
    assert slot is not None
    delivery = Spool(front.root)
    delivery.adopt(old, slot)
    delivery.remove(old)  # empties the slot
    front.released(old, slot)  # the front door hears of it: the slot is free again
    new = await _put(front, b"Subject: new\r\n\r\nnew\r\n")
    assert front.slot_of(new) == slot
    delivery.adopt(old, slot)  # the stale hand-over

    with pytest.raises(FileNotFoundError):
        delivery.read(old)
    assert delivery.queue_ids() == []
    assert front.read(new).message == b"Subject: new\r\n\r\nnew\r\n"

    gone = await _put(front)
    empty_slot = front.slot_of(gone)
    assert empty_slot is not None
    os.truncate(front.path(gone), 0)
    delivery.adopt(gone, empty_slot)
    with pytest.raises(FileNotFoundError):
        delivery.read(gone)
    assert (front.slots / f"{empty_slot:08d}").exists()  # left where it is, not quarantined
    assert os.listdir(front.quarantine_dir) == []


async def test_a_removed_entry_s_slot_is_deleted_once_enough_slots_are_free(tmp_path: Path,
                                                                           monkeypatch) -> None:
    spool = _spool(tmp_path)
    qid = await _put(spool)
    path = spool.path(qid)
    monkeypatch.setattr("mta_relay.spool.MAX_FREE", 0)
    spool.remove(qid)
    assert not path.exists()
    assert spool.queue_ids() == []


async def test_each_serving_process_takes_slots_from_its_own_range(tmp_path: Path) -> None:
    first = _spool(tmp_path)
    second = Spool(tmp_path / "spool", worker=1)
    assert second.attach() == []
    qid = await _put(second)
    slot = second.slot_of(qid)
    assert slot is not None
    assert slot >= SLOT_RANGE  # never one the first process could take
    first_qid = await _put(first)
    assert (first.slot_of(first_qid) or 0) < SLOT_RANGE
    # the first process learns the entry; when delivery empties it, the slot goes back to its owner
    given_back: list[int] = []
    first.on_foreign_release = given_back.append
    first.adopt(qid, slot)
    first.remove(qid)
    assert given_back == [slot]
    assert first.slot_of(qid) is None
    second.reuse(slot)
    second.reuse(slot)  # told twice (found empty at a restart, and told): still one free slot
    assert second._free.count(slot) == 1


async def test_a_restarted_serving_process_reports_its_entries_and_quarantines_a_torn_one(
        tmp_path: Path) -> None:
    _spool(tmp_path)
    second = Spool(tmp_path / "spool", worker=1)
    second.attach()
    kept = await _put(second)
    torn = await _put(second)
    torn_slot = second.slot_of(torn)
    assert torn_slot is not None
    os.truncate(second._slot_file(torn_slot), 40)  # died mid-write: never acknowledged
    again = Spool(tmp_path / "spool", worker=1)
    assert again.attach() == [(kept, second.slot_of(kept))]
    assert len(list(again.quarantine_dir.iterdir())) == 1
    # the first process's recovery leaves the second's free slots to it
    first = Spool(tmp_path / "spool")
    first.recover()
    assert all(slot < SLOT_RANGE for slot in first._free)
    assert first.slot_of(kept) == second.slot_of(kept)


async def test_a_slot_of_a_range_no_process_owns_any_more_is_discarded(tmp_path: Path) -> None:
    """Fewer serving processes than when the entry was written: the first process learns it at recovery,
    delivery empties it, and its file goes (nobody would take it again)."""
    third = Spool(tmp_path / "spool", worker=2)
    third.attach()
    qid = await _put(third)
    slot = third.slot_of(qid)
    assert slot is not None
    first = _spool(tmp_path)
    assert first.slot_of(qid) == slot
    first.on_foreign_release = first.discard
    first.remove(qid)
    assert not first._slot_path(slot).exists()
