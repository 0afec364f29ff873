"""The event store: queries by each filter, pruning, the webhook outbox and its limit, durability
across a killed process, two processes writing at once."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventkit import child_argv, event, run_child
from mta_relay.events.record import EventType
from mta_relay.events.store import EventStore, WebhookFilter

pytestmark = pytest.mark.unit
ALL = WebhookFilter("all")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "events" / "events.db", retention=3600, max_events=1000, max_pending=50)
    yield s
    s.close()


def test_an_event_comes_back_equal(store: EventStore) -> None:
    original = event(EventType.BOUNCE)
    store.insert([original], [])
    assert store.query(queue_id=original.queue_id) == [original]


def test_each_filter_finds_its_events(store: EventStore) -> None:
    now = time.time()
    a = event(recipient="Bob@Example.NET", sender="alice@example.com", credential="app", timestamp=now - 30)
    b = event(EventType.BOUNCE, recipient="carol@example.org", sender="ALICE@example.com", credential="batch",
              timestamp=now - 20)
    c = event(EventType.RECEPTION, recipient="bob@example.net", sender="dave@example.com", credential="app",
              timestamp=now - 10)
    store.insert([a, b, c], [])
    assert store.query(recipient="bob@example.net") == [a, c]  # case-insensitive, whole address
    assert store.query(sender="alice@EXAMPLE.com") == [a, b]
    assert store.query(credential="app") == [a, c]
    assert store.query(credential="APP") == []  # usernames match exactly
    assert store.query(message_id=b.message_id) == [b]
    assert store.query(queue_id=c.queue_id) == [c]
    assert store.query(since=now - 15) == [c]
    assert store.query(types=["Bounce"]) == [b]
    assert store.query(types=["Bounce", "Reception"]) == [b, c]
    assert store.query(types=["Bounce", "Reception"], since=now - 15) == [c]
    assert store.query(types=[]) == []
    assert store.query(recipient="bob@example.net", types=["Reception"]) == [c]
    assert store.query(recipient="bob@example.net", credential="app", since=now - 25) == [c]
    assert store.query() == [a, b, c]


def test_results_are_in_time_order_and_the_latest_when_limited(store: EventStore) -> None:
    now = time.time()
    events = [event(timestamp=now - i) for i in range(10)]  # inserted newest first
    store.insert(events, [])
    assert store.query(recipient="bob@example.net") == events[::-1]
    assert store.query(limit=3) == events[2::-1]
    assert store.query(types=["Delivery", "Bounce"], limit=3) == events[2::-1]


def test_prune_by_retention_and_by_count(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "e.db", retention=100, max_events=5)
    now = time.time()
    old = [event(timestamp=now - 200 - i) for i in range(3)]
    fresh = [event(timestamp=now - 50 + i) for i in range(8)]
    store.insert(old + fresh, [])
    assert store.prune(now) == 3 + 3
    assert store.query() == fresh[3:]  # the oldest beyond max_events went first
    store.close()


def test_prune_keeps_what_an_outbox_still_holds(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "e.db", retention=100, max_events=2)
    now = time.time()
    pending = event(timestamp=now - 500)
    others = [event(EventType.BOUNCE, timestamp=now - 400), event(EventType.BOUNCE, timestamp=now - 1)]
    store.insert([pending], [WebhookFilter("hook", types=frozenset({"Delivery"}))])
    store.insert(others, [WebhookFilter("hook", types=frozenset({"Delivery"}))])
    store.max_events = 1  # the pending one counts, but does not go
    assert store.prune(now) == 2  # the old Bounce by age, the newest by count
    assert store.query() == [pending]
    store.max_events = 2
    store.insert([others[1]], [])
    assert store.query() == [pending, others[1]]
    batch = store.next_batch("hook", 10)
    assert batch is not None
    store.delivered(batch)
    assert store.prune(now) == 1
    assert store.query() == [others[1]]
    store.close()


def test_outbox_batches_by_filter_and_in_order(store: EventStore) -> None:
    hooks = [ALL, WebhookFilter("bounces", types=frozenset({"Bounce"})),
             WebhookFilter("batch-only", credentials=frozenset({"batch"}))]
    events = [event(), event(EventType.BOUNCE), event(credential="batch"),
              event(EventType.BOUNCE, credential="batch")]
    store.insert(events, hooks)
    assert store.pending("all")[0] == 4
    assert store.pending("all")[1] == events[0].timestamp
    assert store.pending("unknown") == (0, None)
    first = store.next_batch("all", 3)
    assert first is not None
    assert first.id.startswith("msg_")
    assert first.events == tuple(events[:3])
    assert (first.attempts, first.next_attempt_at) == (0, 0.0)
    assert store.delivered(first) == 3
    second = store.next_batch("all", 3)
    assert second is not None
    assert second.events == (events[3],)
    assert second.id != first.id
    bounces = store.next_batch("bounces", 10)
    assert bounces is not None
    assert bounces.events == (events[1], events[3])
    only_batch = store.next_batch("batch-only", 10)
    assert only_batch is not None
    assert only_batch.events == (events[2], events[3])


def test_a_failed_batch_is_the_same_batch_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = EventStore(path)
    store.insert([event() for _ in range(5)], [ALL])
    batch = store.next_batch("all", 3)
    assert batch is not None
    store.failed(batch, 1234.5)
    store.failed(batch, 2345.5)
    store.insert([event()], [ALL])  # newer events do not join a formed batch
    store.close()
    again = EventStore(path)
    retry = again.next_batch("all", 100)
    assert retry is not None
    assert (retry.id, retry.events, retry.created) == (batch.id, batch.events, batch.created)
    assert (retry.attempts, retry.next_attempt_at) == (2, 2345.5)
    assert again.delivered(retry) == 3
    assert again.pending("all")[0] == 3
    again.close()


def test_the_outbox_limit_drops_the_oldest_and_counts(store: EventStore) -> None:
    events = [event() for _ in range(60)]
    store.insert(events[:40], [ALL])
    batch = store.next_batch("all", 10)  # events 0-9
    assert batch is not None
    store.insert(events[40:], [ALL])  # 60 pending, limit 50: the batch (the oldest ten) goes whole
    assert store.pending("all") == (50, events[10].timestamp)
    assert store.dropped("all") == 10
    store.delivered(batch)  # the receiver got it after all: nothing more leaves the outbox
    assert store.pending("all")[0] == 50
    store.insert([event() for _ in range(5)], [ALL])  # no batch now: the five oldest go
    assert store.pending("all") == (50, events[15].timestamp)
    assert store.dropped("all") == 15
    assert store.count() == 65  # dropped from the outbox, still in the store


def test_expire_drops_old_pending_events(store: EventStore) -> None:
    now = time.time()
    old = [event(timestamp=now - 100 - i) for i in range(3)]
    new = [event(timestamp=now)]
    store.insert(old + new, [ALL])
    batch = store.next_batch("all", 2)
    assert batch is not None
    assert store.expire("all", now - 50) == 3
    assert store.pending("all") == (1, now)
    assert store.delivered(batch) == 0
    assert store.expire("missing", now) == 0


def test_forget_webhook(store: EventStore) -> None:
    store.insert([event()], [ALL, WebhookFilter("other")])
    assert store.webhooks() == ["all", "other"]
    assert store.next_batch("all", 10) is not None
    store.forget_webhook("all")
    assert store.webhooks() == ["other"]
    assert store.next_batch("all", 10) is None
    assert store.pending("all") == (0, None)
    assert store.pending("other")[0] == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    EventStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 9")
    db.close()
    with pytest.raises(Exception, match="schema 9"):
        EventStore(path)


def test_the_database_is_in_wal_mode_and_owner_only(store: EventStore) -> None:
    store.insert([event()], [])
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    for name in ("events.db", "events.db-wal"):
        assert stat.S_IMODE((store.path.parent / name).stat().st_mode) == 0o600


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from eventkit import event
from mta_relay.events.store import EventWriter, WebhookFilter
writer = EventWriter(Path(sys.argv[1]), log_events=False)
writer.configure([WebhookFilter("all")])
for _ in range(300):
    writer.emit(event())
assert writer.flush(10)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_flushed_group_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    done = run_child(KILLED_WRITER, str(path))
    assert done.returncode == -9, done.stderr
    store = EventStore(path)
    assert store.count() == 300
    assert store.pending("all")[0] == 300
    store.close()


TWO_WRITERS = """
import sys
from pathlib import Path
from eventkit import event
from mta_relay.events.record import EventType
from mta_relay.events.store import EventStore, WebhookFilter
store = EventStore(Path(sys.argv[1]), max_pending=10**6)
kind = EventType.RECEPTION if sys.argv[2] == "front" else EventType.DELIVERY
for _ in range(100):
    store.insert([event(kind) for _ in range(20)], [WebhookFilter("all")])
    if sys.argv[2] == "delivery":
        batch = store.next_batch("all", 7)
        store.delivered(batch)
store.close()
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    EventStore(path).close()
    children = [subprocess.Popen(child_argv(TWO_WRITERS, str(path), role), stderr=subprocess.PIPE, text=True)
                for role in ("front", "delivery")]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    store = EventStore(path)
    assert store.count() == 4000
    assert len(store.query(types=["Reception"], limit=10_000)) == 2000
    assert store.pending("all")[0] == 4000 - 700
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 3300
    db.close()
    store.close()
