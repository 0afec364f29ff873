"""The queue's suspensions, as the delivery process holds them: recipient domains and credentials whose
mail stays queued (never bounced for being held) until resumed. Kept on the spool volume
(``state_files``: ``state/suspensions.json``, written atomically before an action is answered), so they
survive a restart; loaded before the queue runner schedules anything."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from mta_relay import state_files
from mta_relay.queue_admin import Target, domain_of
from mta_relay.state_files import Hold


@dataclass
class Holds:
    path: Path | None = None  # None: in memory only (tests, a runner without a spool volume)
    domains: dict[str, Hold] = field(default_factory=dict)
    credentials: dict[str, Hold] = field(default_factory=dict)
    _saving: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # an older state never lands last

    @classmethod
    def load(cls, path: Path) -> Holds:
        """Blocking (a small file, read once at start); an unusable file is logged and reads as none."""
        empty: state_files.Suspensions = ({}, {})
        domains, credentials = state_files.load(path, state_files.decode_suspensions, empty)
        return cls(path, domains, credentials)

    def held(self, credential: str, recipient: str) -> bool:
        """Mail from ``credential`` to ``recipient`` waits."""
        if not self.domains and not self.credentials:  # the usual case: one test per recipient
            return False
        return (bool(credential) and credential in self.credentials) or domain_of(recipient) in self.domains

    def _table(self, target: Target) -> dict[str, Hold]:
        return self.domains if target.kind == "domain" else self.credentials

    async def suspend(self, target: Target, by: str, at: float) -> bool:
        """Hold ``target`` (durable when this returns; OSError if the file cannot be written, and then
        nothing changed). False if it was held already (kept as first asked)."""
        table = self._table(target)
        if target.value in table:
            return False
        table[target.value] = Hold(by, at)
        try:
            await self._save()
        except OSError:
            del table[target.value]
            raise
        return True

    async def resume(self, target: Target) -> Hold | None:
        """Release ``target``; the hold it had, None if it had none. OSError as ``suspend``."""
        table = self._table(target)
        hold = table.pop(target.value, None)
        if hold is None:
            return None
        try:
            await self._save()
        except OSError:
            table[target.value] = hold
            raise
        return hold

    async def _save(self) -> None:
        if self.path is None:
            return
        async with self._saving:
            data = state_files.encode_suspensions((self.domains, self.credentials))
            await asyncio.to_thread(state_files.write_atomic, self.path, data)

    def to_json(self) -> dict[str, dict[str, dict[str, object]]]:
        return {"domains": {k: {"by": h.by, "at": h.at} for k, h in sorted(self.domains.items())},
                "credentials": {k: {"by": h.by, "at": h.at} for k, h in sorted(self.credentials.items())}}
