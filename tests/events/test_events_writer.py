"""The event writer: groups commits off the caller's thread, logs one line per event, never raises or
waits when the store cannot take events."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from eventkit import event
from mta_relay.events.record import Event, EventType
from mta_relay.events.store import EventStore, EventWriter, WebhookFilter
from mta_relay.logs import JsonFormatter

pytestmark = pytest.mark.unit


def _stored(path: Path) -> int:
    store = EventStore(path)
    try:
        return store.count()
    finally:
        store.close()


def test_emitted_events_are_committed_in_groups(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    commits: list[int] = []
    writer = EventWriter(path, log_events=False, group_max=100, on_commit=lambda: commits.append(1))
    for _ in range(1000):
        writer.emit(event())
    assert writer.flush(10)
    assert writer.written == 1000
    assert 10 <= len(commits) < 1000  # grouped: at most 100 a commit, far fewer commits than events
    writer.close()
    assert _stored(path) == 1000


def test_one_json_log_line_per_event(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mta_relay.events")
    writer = EventWriter(tmp_path / "events.db")
    sent = event(EventType.BOUNCE)
    writer.emit(sent)
    writer.close()
    lines = [r for r in caplog.records if r.name == "mta_relay.events"]
    assert len(lines) == 1
    line = json.loads(JsonFormatter().format(lines[0]))
    assert line["event"] == "mail_event"
    assert Event.from_json({k: line[k] for k in sent.to_json()}) == sent


def test_log_lines_are_the_callers_choice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mta_relay.events")
    writer = EventWriter(tmp_path / "events.db", log_events=False)
    writer.emit(event())
    writer.close()
    assert not [r for r in caplog.records if r.name == "mta_relay.events"]


def test_configure_routes_to_outboxes_and_forgets_removed_ones(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = EventWriter(path, log_events=False)
    writer.configure([WebhookFilter("a"), WebhookFilter("b", types=frozenset({"Bounce"}))])
    writer.emit(event())
    writer.emit(event(EventType.BOUNCE))
    writer.configure([WebhookFilter("b", types=frozenset({"Bounce"}))])
    writer.emit(event(EventType.BOUNCE))
    assert writer.flush(10)
    store = EventStore(path)
    assert store.webhooks() == ["b"]
    assert store.pending("b")[0] == 2
    store.close()
    writer.close()


def test_a_store_that_fails_neither_raises_nor_loses_the_log_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mta_relay.events")

    def full(self: EventStore, events: Sequence[Event], webhooks: Sequence[WebhookFilter]) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    path = tmp_path / "events.db"
    writer = EventWriter(path, log_events=False)
    with monkeypatch.context() as patch:
        patch.setattr(EventStore, "insert", full)
        for _ in range(3):
            writer.emit(event())
        assert writer.flush(10)
    assert (writer.failed, writer.written) == (3, 0)
    assert len([r for r in caplog.records if getattr(r, "fields", {}).get("event") == "mail_event"]) == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].fields["detail"] == "database or disk is full"  # type: ignore[attr-defined]
    writer.emit(event())  # the disk has room again
    writer.close()
    assert writer.written == 1
    assert _stored(path) == 1


def test_an_unopenable_path_is_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.mkdir()  # a directory where the database should be
    writer = EventWriter(path, log_events=False)
    writer.emit(event())
    assert writer.flush(10)
    writer.close()
    assert writer.failed == 1


def test_emit_never_waits_for_a_stuck_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = EventStore.insert

    def stuck(self: EventStore, events: Sequence[Event], webhooks: Sequence[WebhookFilter]) -> None:
        release.wait(30)
        real(self, events, webhooks)

    monkeypatch.setattr(EventStore, "insert", stuck)
    writer = EventWriter(tmp_path / "events.db", log_events=False, group_max=10, queue_max=100)
    started = time.monotonic()
    for _ in range(1000):
        writer.emit(event())
    assert time.monotonic() - started < 2
    assert writer.overflowed >= 800  # the queue held at most 100 beyond the group in the store's hands
    release.set()
    writer.close()
    assert writer.written + writer.overflowed == 1000
