"""The relay settings' ``events`` section → where the store is, the webhooks' filters and targets.

The store lives on the spool volume (``<queue.path>/events/events.db``): events survive what queued
mail survives. A webhook whose secret file is missing or unusable is left out, with a log line, so a
typo in one Secret never stops mail or the other webhooks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from mta_relay import config_loader
from mta_relay.config import RelaySettings
from mta_relay.events.store import EventWriter, StoreLimits, WebhookFilter
from mta_relay.events.webhooks import WebhookTarget

log = logging.getLogger("mta_relay.events")
STORE_DIR = "events"
STORE_FILE = "events.db"


def store_path(config_dir: Path, settings: RelaySettings) -> Path:
    return config_loader.resolve_path(config_dir, settings.queue.path) / STORE_DIR / STORE_FILE


def limits(settings: RelaySettings) -> StoreLimits:
    events = settings.events
    return StoreLimits(retention=float(events.retention_seconds), max_events=events.max_stored_events,
                       max_pending=events.max_pending_events)


def writer(config_dir: Path, settings: RelaySettings,
           on_commit: Callable[[], None] | None = None) -> EventWriter:
    """The process's writer (its thread opens the store on the spool volume at the first event)."""
    bounds = limits(settings)
    events = EventWriter(store_path(config_dir, settings), retention=bounds.retention,
                         max_events=bounds.max_events, max_pending=bounds.max_pending, on_commit=on_commit)
    events.configure(filters(settings))
    return events


def filters(settings: RelaySettings) -> list[WebhookFilter]:
    return [WebhookFilter(hook.name, frozenset(hook.types), frozenset(hook.credentials))
            for hook in settings.events.webhooks]


def targets(config_dir: Path, settings: RelaySettings) -> list[WebhookTarget]:
    """Every configured webhook. One whose secret cannot be read gets an empty secret: the sender logs
    it and leaves it idle, and its outbox is kept for when the Secret is back."""
    found = []
    for hook in settings.events.webhooks:
        path = config_loader.resolve_path(config_dir, hook.secret_file)
        try:
            secret = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            log.error("webhook idle: its secret cannot be read", extra={"fields": {
                "event": "webhook_secret_missing", "webhook": hook.name, "error": type(error).__name__}})
            secret = ""
        ca_file = config_loader.resolve_path(config_dir, hook.ca_file) if hook.ca_file else None
        found.append(WebhookTarget(
            name=hook.name, url=hook.url, secret=secret, types=frozenset(hook.types),
            credentials=frozenset(hook.credentials), ca_file=ca_file,
            allow_insecure_http=hook.allow_insecure_http, timeout=hook.timeout_seconds))
    return found
