"""Which bounces add their recipient to the suppression list (the rule, pure: ``from_bounce``), and the
delivery process's writer of those entries (``BounceSuppressor``): a write never waits on the loop."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mta_relay.config import Suppression
from mta_relay.suppressions.store import BadEntry, Entry, SuppressionStore, entry

log = logging.getLogger("mta_relay.suppressions")
DSN_OWNER = "(delivery status notification)"  # added_by when the bounced message was one of our DSNs


def from_bounce(settings: Suppression, *, recipient: str, category: str, kind: str, credential: str,
                reply: str, now: float) -> Entry | None:
    """The entry a permanent failure adds, or None: only a hard bounce of a class the Cluster names."""
    if not settings.enabled or kind != "hard" or category not in settings.classes:
        return None
    expires = now + settings.expire_after_seconds if settings.expire_after_seconds else None
    try:
        return entry(recipient, reason=category, source="Bounce", added_by=credential or DSN_OWNER,
                     detail=reply, now=now, expires=expires)
    except BadEntry:
        return None  # a recipient no address could be (the next hop refused it for that very reason)


class BounceSuppressor:
    """The delivery process's side: entries go to the store from one worker thread, in order."""

    def __init__(self, path: Path, settings: Suppression) -> None:
        self.path, self.settings = path, settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suppressions")
        self._store: SuppressionStore | None = None
        self.added = 0

    def bounced(self, *, recipient: str, category: str, kind: str, credential: str, reply: str,
                now: float) -> None:
        found = from_bounce(self.settings, recipient=recipient, category=category, kind=kind,
                            credential=credential, reply=reply, now=now)
        if found is not None:
            self._pool.submit(self._put, found)

    def _put(self, found: Entry) -> None:
        try:
            if self._store is None:
                self._store = SuppressionStore(self.path)
            self.added += self._store.put([found])
        except Exception as error:
            log.error("suppression not recorded", extra={"fields": {
                "event": "suppression_write_failed", "error": type(error).__name__}})
            return
        log.info("recipient suppressed", extra={"fields": {
            "event": "suppressed_added", "recipient": found.address, "reason": found.reason,
            "credential": found.added_by}})

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._store is not None:
            self._store.close()
