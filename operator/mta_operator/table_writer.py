"""The debounced writer of one Cluster's credential table: waits for a burst of changes to settle, renders
the shards with the relay's own ``render_shards``, writes only the shard Secrets whose text changed, then
the manifest that names them (the relay's watcher reads the manifest, so it never mixes generations)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import TYPE_CHECKING

from . import credential_table, naming
from .render import secrets
from .state import Key
from .workqueue import WorkQueue

if TYPE_CHECKING:
    from .controller import Controller

log = logging.getLogger("mta_operator.table")


def make_queue(ctl: Controller) -> WorkQueue:
    return WorkQueue(ctl.handle, ctl.options.workers)


async def run(ctl: Controller, ck: Key) -> None:
    table = ctl.tables[ck]
    while True:
        await table.dirty.wait()
        # Coalesce for at least the debounce, and for as long as the last render took: under a burst,
        # rendering stays a bounded share of the CPU; a single change still waits only a little.
        await asyncio.sleep(max(ctl.options.table_debounce, table.render_seconds))
        table.dirty.clear()
        try:
            await flush(ctl, ck)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # retried: the table stays dirty
            log.warning("credential table write failed", extra={"cluster": f"{ck[0]}/{ck[1]}",
                                                                "error": str(error)})
            table.dirty.set()
            await asyncio.sleep(1)


def decode_shard(obj: dict) -> tuple[str, str] | None:
    """(file name, text) of a shard Secret as read from the API."""
    data = obj.get("data") or {}
    if len(data) != 1:
        return None
    (name, value), = data.items()
    return name, base64.b64decode(value).decode()


async def flush(ctl: Controller, ck: Key) -> None:
    table = ctl.tables[ck]
    cluster = ctl.index.clusters.get(ck)
    if cluster is None:
        return
    entries = dict(table.entries)
    pending = {k for k in table.pending if k in entries}
    changed, table.changed = table.changed, set()
    started = time.monotonic()
    try:
        shards = await asyncio.get_running_loop().run_in_executor(
            None, credential_table.render, list(entries.values()), table.written, changed)
    except BaseException:
        table.changed |= changed
        raise
    table.render_seconds = time.monotonic() - started
    objects, manifest = secrets.table(cluster, shards)
    for file_name, text in shards.items():
        if table.written.get(file_name) != text:
            try:
                await ctl.io(ctl.applier.ensure, objects[naming.shard(ck[1], secrets.shard_index(file_name))])
            except BaseException:
                table.changed |= changed  # the next round renders these shards again
                raise
            table.written[file_name] = text
    manifest_text = manifest["data"][secrets.MANIFEST_KEY]
    if table.manifest_written != manifest_text:
        await ctl.io(ctl.applier.ensure, manifest)
        table.manifest_written = manifest_text
    for stale in [f for f in table.written if f not in shards]:
        # After the manifest stopped naming it, so no reader still needs it.
        name = naming.shard(ck[1], secrets.shard_index(stale))
        await ctl.io(ctl.applier.remove, "v1", "Secret", ck[0], name, cluster.metadata.uid or "")
        del table.written[stale]
    for key in pending:
        if table.entries.get(key) is entries[key]:
            table.pending.discard(key)
            ctl.queue.add(("cred-status", key))
