"""One Cluster's credential table in memory: the entry of every served SmtpCredential and the shard texts
last written. The controller's debounced writer turns it into Secrets; only changed shards are written."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mta_relay import config as rc

from .state import Key


@dataclass
class Table:
    entries: dict[Key, rc.Credential] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)  # shard file name → text in the API
    manifest_written: str | None = None
    render_seconds: float = 0.0  # how long the last render took
    # Credentials whose entry changed and that become Ready once the next write lands.
    pending: set[Key] = field(default_factory=set)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def put(self, key: Key, entry: rc.Credential) -> bool:
        """Set a credential's entry; True (and the table marked dirty) when it changed."""
        if self.entries.get(key) == entry:
            return False
        self.entries[key] = entry
        self.pending.add(key)
        self.dirty.set()
        return True

    def remove(self, key: Key) -> bool:
        self.pending.discard(key)
        if self.entries.pop(key, None) is None:
            return False
        self.dirty.set()
        return True

    def served(self, key: Key) -> bool:
        return key in self.entries and key not in self.pending
