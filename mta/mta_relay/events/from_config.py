"""The relay settings' ``events`` section → where the store is, the webhooks' filters and targets.

The store lives on the spool volume (``<queue.path>/events/events.db``): events survive what queued
mail survives. A webhook whose secret file is missing or unusable is left out, with a log line, so a
typo in one Secret never stops mail or the other webhooks.
"""

from __future__ import annotations

import logging
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


def writer(config_dir: Path, settings: RelaySettings) -> EventWriter:
    """The process's writer: it creates the store's directory on the spool volume if needed."""
    path = store_path(config_dir, settings)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    return EventWriter(path, filters(settings), limits(settings))


def filters(settings: RelaySettings) -> list[WebhookFilter]:
    return [WebhookFilter(hook.name, frozenset(hook.types), frozenset(hook.credentials))
            for hook in settings.events.webhooks]


def targets(config_dir: Path, settings: RelaySettings) -> list[WebhookTarget]:
    found = []
    for hook in settings.events.webhooks:
        path = config_loader.resolve_path(config_dir, hook.secret_file)
        try:
            secret = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            log.error("webhook idle: its secret cannot be read", extra={"fields": {
                "event": "webhook_secret_missing", "webhook": hook.name, "error": type(error).__name__}})
            continue
        ca_file = config_loader.resolve_path(config_dir, hook.ca_file) if hook.ca_file else None
        try:
            found.append(WebhookTarget(
                name=hook.name, url=hook.url, secret=secret, types=frozenset(hook.types),
                credentials=frozenset(hook.credentials), ca_file=ca_file,
                allow_insecure_http=hook.allow_insecure_http, timeout=hook.timeout_seconds))
        except ValueError as error:  # a secret that is not whsec_<base64>: the text names no secret
            log.error("webhook idle: its secret is not a Standard Webhooks secret", extra={"fields": {
                "event": "webhook_secret_refused", "webhook": hook.name, "reason": str(error)}})
    return found
