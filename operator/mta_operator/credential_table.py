"""One Cluster's credential table in memory: the entry of every served SmtpCredential and the shard texts
last written. The controller's debounced writer turns it into Secrets; only changed shards are written."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mta_relay import config as rc
from mta_relay.shards import DEFAULT_SHARD_BUDGET, SHARD_NAME, render_shards, shard_of  # relay's own hash

from .state import Key


def consistent(texts: dict[str, list[str]]) -> bool:
    """Whether shard file name → usernames is the hash assignment for that many shards (a crash in the
    middle of a resharding write leaves a mix, which only a full render repairs)."""
    count = len(texts)
    return set(texts) == {SHARD_NAME.format(i) for i in range(count)} and all(
        SHARD_NAME.format(shard_of(u, count)) == name for name, users in texts.items() for u in users)


def render(entries: list[rc.Credential], previous: dict[str, str], changed: set[str],
           budget: int = DEFAULT_SHARD_BUDGET) -> dict[str, str]:
    """Shard texts for ``entries``: only the shards holding a ``changed`` username are re-rendered (the
    assignment is hash-stable), the rest kept from ``previous``; everything when there is no previous
    rendering (or it is not a clean assignment) or a shard outgrows the budget. Each shard is rendered
    with the relay's own render_shards."""
    count = len(previous)
    clean = set(previous) == {SHARD_NAME.format(i) for i in range(count)} and all(previous.values())
    if not count or not clean:
        return render_shards(entries, budget)
    texts = dict(previous)
    for index in {shard_of(username, count) for username in changed}:
        part = render_shards([e for e in entries if shard_of(e.username, count) == index], budget)
        if len(part) != 1:
            return render_shards(entries, budget)
        texts[SHARD_NAME.format(index)] = next(iter(part.values()))
    return texts


@dataclass
class Table:
    entries: dict[Key, rc.Credential] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)  # shard file name → text in the API
    manifest_written: str | None = None
    render_seconds: float = 0.0  # how long the last render took
    # Credentials whose entry changed and that become Ready once the next write lands.
    pending: set[Key] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)  # usernames whose shard needs rendering
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def put(self, key: Key, entry: rc.Credential) -> bool:
        """Set a credential's entry; True (and the table marked dirty) when it changed."""
        old = self.entries.get(key)
        if old == entry:
            return False
        if old is not None:
            self.changed.add(old.username)
        self.changed.add(entry.username)
        self.entries[key] = entry
        self.pending.add(key)
        self.dirty.set()
        return True

    def remove(self, key: Key) -> bool:
        self.pending.discard(key)
        old = self.entries.pop(key, None)
        if old is None:
            return False
        self.changed.add(old.username)
        self.dirty.set()
        return True

    def served(self, key: Key) -> bool:
        return key in self.entries and key not in self.pending
