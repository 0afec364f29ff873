"""One Cluster's credential table: in memory (``Table``: the entry of every served SmtpCredential and the
shard texts last written), rendered (``render``: only the shards that hold a changed username, each with
the relay's own ``render_shards``) and written by a debounced writer (``run``/``flush``) that waits for a
burst of changes to settle, writes only the shard Secrets whose text changed, then the manifest that names
them (the relay's watcher reads the manifest, so it never mixes generations)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mta_relay import config as rc
from mta_relay.shards import (
    DEFAULT_SHARD_BUDGET,
    MANIFEST_KEY,
    render_shards,
    shard_file,
    shard_index,
    shard_of,
    shard_secret,
)

from mta_operator.render import secrets

from .index import Key

if TYPE_CHECKING:  # the Context names Table, so this import is for the type checker only
    from .context import Context

log = logging.getLogger("mta_operator.table")
RETRY_SECONDS = 1.0  # after a failed write, before the next try (the table stays dirty meanwhile)


def consistent(texts: dict[str, list[str]]) -> bool:
    """Whether shard file name → usernames is the hash assignment for that many shards (a crash in the
    middle of a resharding write leaves a mix, which only a full render repairs)."""
    count = len(texts)
    return set(texts) == {shard_file(i) for i in range(count)} and all(
        shard_file(shard_of(u, count)) == name for name, users in texts.items() for u in users)


def render(entries: list[rc.Credential], previous: dict[str, str], changed: set[str],
           budget: int = DEFAULT_SHARD_BUDGET) -> dict[str, str]:
    """Shard texts for ``entries``: only the shards holding a ``changed`` username are re-rendered (the
    assignment is hash-stable), the rest kept from ``previous``; everything when there is no previous
    rendering (or it is not a clean assignment) or a shard outgrows the budget. Each shard is rendered
    with the relay's own render_shards."""
    count = len(previous)
    clean = set(previous) == {shard_file(i) for i in range(count)} and all(previous.values())
    if not count or not clean:
        return render_shards(entries, budget)
    texts = dict(previous)
    for index in {shard_of(username, count) for username in changed}:
        part = render_shards([e for e in entries if shard_of(e.username, count) == index], budget)
        if len(part) != 1:
            return render_shards(entries, budget)
        texts[shard_file(index)] = next(iter(part.values()))
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



async def run(ctx: Context, ck: Key) -> None:
    table = ctx.tables[ck]
    while True:
        await table.dirty.wait()
        # Coalesce for at least the debounce, and for as long as the last render took: under a burst,
        # rendering stays a bounded share of the CPU; a single change still waits only a little.
        await asyncio.sleep(max(ctx.options.table_debounce, table.render_seconds))
        table.dirty.clear()
        try:
            await flush(ctx, ck)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # retried: the table stays dirty
            log.warning("credential table write failed", extra={"cluster": f"{ck[0]}/{ck[1]}",
                                                                "error": str(error)})
            table.dirty.set()
            await asyncio.sleep(RETRY_SECONDS)


def shard_in_secret(obj: dict[str, Any]) -> tuple[str, str] | None:
    """(file name, text) of a shard Secret as read from the API."""
    data = obj.get("data") or {}
    if len(data) != 1:
        return None
    (name, value), = data.items()
    return name, base64.b64decode(value).decode()


async def flush(ctx: Context, ck: Key) -> None:
    table = ctx.tables[ck]
    cluster = ctx.index.clusters.get(ck)
    if cluster is None:
        return
    entries = dict(table.entries)
    pending = {k for k in table.pending if k in entries}
    changed, table.changed = table.changed, set()
    started = time.monotonic()
    try:
        shards = await asyncio.get_running_loop().run_in_executor(
            None, render, list(entries.values()), table.written, changed)
    except BaseException:
        table.changed |= changed
        raise
    table.render_seconds = time.monotonic() - started
    objects, manifest = secrets.table(cluster, shards)
    for file_name, text in shards.items():
        if table.written.get(file_name) != text:
            try:
                await ctx.io(ctx.applier.ensure, objects[shard_secret(ck[1], shard_index(file_name))])
            except BaseException:
                table.changed |= changed  # the next round renders these shards again
                raise
            table.written[file_name] = text
    manifest_text = base64.b64decode(manifest["data"][MANIFEST_KEY]).decode()  # as startup reads it
    if table.manifest_written != manifest_text:
        await ctx.io(ctx.applier.ensure, manifest)
        table.manifest_written = manifest_text
    for stale in [f for f in table.written if f not in shards]:
        # After the manifest stopped naming it, so no reader still needs it.
        name = shard_secret(ck[1], shard_index(stale))
        await ctx.io(ctx.applier.remove, "v1", "Secret", ck[0], name, cluster.metadata.uid or "")
        del table.written[stale]
    for key in pending:
        if table.entries.get(key) is entries[key]:
            table.pending.discard(key)
            ctx.enqueue(("cred-status", key))
