"""Delivers one message to its next hops: the smarthost, or each recipient domain's MX hosts.

Recipients are grouped by destination (one group for a smarthost, one per domain for MX); groups go out
concurrently, each within its destination's connection limit, trying hosts in order until one takes a
transaction. Hosts that cannot be reached are skipped; a host's answer to the transaction is final for
this attempt. A reused connection that turns out dead at MAIL FROM is replaced once by a fresh one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosmtplib
import dns.asyncresolver

from mta_relay.delivery.client import HopPolicy, HopUnavailable, hop_facts, open_session, transact
from mta_relay.delivery.mx import Hop, RouteError, resolve_hops
from mta_relay.delivery.outcome import RecipientOutcome, everyone, with_hop
from mta_relay.delivery.pool import ConnectionPool

Resolve = Callable[[str], Awaitable[list[Hop]]]


@dataclass(frozen=True)
class Route:
    """Where mail goes: ``resolve`` maps a destination to its hosts; ``by_domain`` splits by domain."""

    policy: HopPolicy
    resolve: Resolve
    by_domain: bool


def smarthost_route(host: str, policy: HopPolicy) -> Route:
    async def resolve(_destination: str) -> list[Hop]:
        return [Hop(host, host)]  # the system resolver finds its addresses on connect
    return Route(policy, resolve, by_domain=False)


def mx_route(resolver: dns.asyncresolver.Resolver, policy: HopPolicy) -> Route:
    async def resolve(domain: str) -> list[Hop]:
        return await resolve_hops(domain, resolver)
    return Route(policy, resolve, by_domain=True)


def group_recipients(recipients: list[str], by_domain: bool) -> dict[str, list[str]]:
    """Destination → its recipients, in first-seen order. Domains compare case-insensitively."""
    if not by_domain:
        return {"smarthost": list(recipients)}
    groups: dict[str, list[str]] = {}
    for rcpt in recipients:
        groups.setdefault(rcpt.rsplit("@", 1)[-1].lower().rstrip("."), []).append(rcpt)
    return groups


class Deliverer:
    def __init__(self, route: Route, pool: ConnectionPool) -> None:
        self.route, self.pool = route, pool

    async def deliver(self, sender: str, recipients: list[str], message: bytes) -> list[RecipientOutcome]:
        """One attempt for every recipient; ``message`` goes out exactly as given (CRLF, signed)."""
        groups = group_recipients(recipients, self.route.by_domain)
        results = await asyncio.gather(*(self._deliver_group(destination, sender, rcpts, message)
                                         for destination, rcpts in groups.items()))
        by_rcpt = {o.recipient: o for group in results for o in group}
        return [by_rcpt[r] for r in recipients]

    async def _deliver_group(self, destination: str, sender: str, rcpts: list[str],
                             message: bytes) -> list[RecipientOutcome]:
        async with self.pool.lease(destination) as lease:
            if lease.session is not None:  # an idle connection from the pool: it may have died unnoticed
                hop = hop_facts(lease.session)
                result = await transact(lease.session, sender, rcpts, message, lease.remote)
                if not result.lost_at_mail:
                    lease.keep = result.reusable
                    return with_hop(result.outcomes, *hop)
                # Dead before anything of the message went out (transact closed it): run the
                # transaction again at once on a fresh connection rather than defer the recipients.
                lease.session = None
            try:
                lease.session, lease.remote = await self._connect(destination)
            except (RouteError, HopUnavailable) as error:
                return everyone(rcpts, error.code, error.text)
            hop = hop_facts(lease.session)
            result = await transact(lease.session, sender, rcpts, message, lease.remote)
            lease.keep = result.reusable
            return with_hop(result.outcomes, *hop)

    async def _connect(self, destination: str) -> tuple[aiosmtplib.SMTP, str]:
        last: HopUnavailable | None = None
        for hop in await self.route.resolve(destination):
            try:
                return await open_session(hop, self.route.policy), hop.name
            except HopUnavailable as error:
                last = error
        assert last is not None  # resolve returns at least one hop or raises
        raise last
