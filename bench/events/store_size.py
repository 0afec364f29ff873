"""What an event store takes on disk (``mta_relay.events.store``): the database and its WAL after a
checkpoint, per event, and the largest objects in it. Shared by the store benchmark (``bench.events``) and
the throughput benchmark (``bench.events.throughput``); open it only while no relay writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mta_relay.events.store import EventStore


def size_of(path: Path) -> dict[str, Any]:
    """Bytes of the database and its -wal/-shm files after a TRUNCATE checkpoint, per stored event."""
    store = EventStore(path)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    parts = dict(store._db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name "
                                   "HAVING sum(pgsize) > 1048576 ORDER BY 2 DESC"))
    count = store.count()
    store.close()
    files = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {"bytes": files, "bytes_per_event": round(files / count), "events": count,
            "by_object_mib": {k: round(v / 2**20, 1) for k, v in parts.items()}}
