"""``SuppressionStore.lookup`` in process, the call the relay makes on its event loop for every RCPT: µs
per call over many addresses, for addresses in the list (hits) and not (misses), on a full store and on
an empty one, interleaved. The store is opened on a copy of the file a relay wrote, with the relay
stopped, so nothing else touches it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mta_relay.suppressions.store import SuppressionStore


@dataclass
class LookupTimes:
    """µs per call, one figure per pass (each pass looks every address up once)."""

    hit_us: list[float] = field(default_factory=list)
    miss_us: list[float] = field(default_factory=list)


def _pass(store: SuppressionStore, addresses: list[str], expect_found: bool) -> float:
    lookup = store.lookup
    now = time.time()  # as the relay's clock would give it; one value keeps time.time() out of the loop
    started = time.perf_counter_ns()
    found = sum(1 for address in addresses if lookup(address, now) is not None)
    spent = time.perf_counter_ns() - started
    if found != (len(addresses) if expect_found else 0):
        raise AssertionError(f"lookup found {found} of {len(addresses)}; expected "
                             f"{'all' if expect_found else 'none'}")
    return spent / 1000 / len(addresses)


def measure(stores: dict[str, tuple[Path, bool]], hits: list[str], misses: list[str],
            repeats: int) -> dict[str, LookupTimes]:
    """``stores``: name → (database file, whether ``hits`` are in it). One warm-up pass each, then
    ``repeats`` passes, the stores taking turns with the first moving on by one every repeat."""
    opened = {name: SuppressionStore(path) for name, (path, _) in stores.items()}
    times = {name: LookupTimes() for name in stores}
    try:
        for name, store in opened.items():
            _pass(store, hits, stores[name][1])
            _pass(store, misses, False)
        names = list(stores)
        for repeat in range(repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                store, in_it = opened[name], stores[name][1]
                times[name].hit_us.append(_pass(store, hits, in_it))
                times[name].miss_us.append(_pass(store, misses, False))
    finally:
        for store in opened.values():
            store.close()
    return times
