"""The quota as the front door's acceptance path sees it (``acceptance``): in the first process, the
``QuotaTracker`` itself; in another serving process, questions to the first one, which keeps every count
of the pod (and exchanges them with the peer MTAs). A credential without a quota never waits for an
answer: its message is counted with a one-way note. One with a quota asks before MAIL FROM is accepted
and again to charge at the end of DATA, so a quota holds exactly across the pod's processes."""

from __future__ import annotations

from typing import Protocol

from mta_relay.config import Quota
from mta_relay.delivery.channel import Channel
from mta_relay.quota import QuotaTracker
from mta_relay.workers.protocol import quota_fields


def limited(quota: Quota | None) -> bool:
    return quota is not None and quota.messages > 0


class QuotaLedger(Protocol):
    async def exhausted(self, username: str, quota: Quota | None) -> bool: ...
    async def charge(self, username: str, quota: Quota | None) -> bool: ...
    def refund(self, username: str, quota: Quota | None) -> None: ...
    def record_use(self, username: str, client_ip: str) -> None: ...


class LocalLedger:
    def __init__(self, tracker: QuotaTracker) -> None:
        self.tracker = tracker

    async def exhausted(self, username: str, quota: Quota | None) -> bool:
        return self.tracker.exhausted(username, quota)

    async def charge(self, username: str, quota: Quota | None) -> bool:
        return self.tracker.charge(username, quota)

    def refund(self, username: str, quota: Quota | None) -> None:
        self.tracker.refund(username, quota)

    def record_use(self, username: str, client_ip: str) -> None:
        self.tracker.record_use(username, client_ip)


class RemoteLedger:
    """A serving process's view: the first process answers. If it cannot (it is gone, and this process
    with it in a moment), a limited credential is refused as used up: temporary, never over quota."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def _ask(self, username: str, quota: Quota | None, *, check: bool) -> bool:
        try:
            reply = await self.channel.request({"op": "quota", "user": username, "quota": quota_fields(quota),
                                                **({"check": True} if check else {})})
        except ConnectionError:
            return False
        return bool(reply["ok"])

    async def exhausted(self, username: str, quota: Quota | None) -> bool:
        return limited(quota) and not await self._ask(username, quota, check=True)

    async def charge(self, username: str, quota: Quota | None) -> bool:
        if limited(quota):
            return await self._ask(username, quota, check=False)
        self.channel.send({"op": "charged", "user": username, "quota": quota_fields(quota)})
        return True

    def refund(self, username: str, quota: Quota | None) -> None:
        self.channel.send({"op": "refund", "user": username, "quota": quota_fields(quota)})

    def record_use(self, username: str, client_ip: str) -> None:
        self.channel.send({"op": "used", "user": username, "ip": client_ip})
