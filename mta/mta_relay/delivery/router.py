"""Delivers one message to its next hops: each recipient's route (MX, smarthosts in order, or hold),
within its destination's shaping limits.

Each recipient gets a route (``Routes.select``: its domain's route, else the sender domain's, else the
default). Recipients are grouped by destination (a route's smarthosts count as one destination, an MX
route makes one per recipient domain); groups go out concurrently, each trying hosts in order until one
takes a transaction. Hosts that cannot be reached, or refuse the greeting, EHLO, STARTTLS or AUTH, are
skipped (a smarthost route's failover); a host's answer to the transaction is final for this attempt. A
reused connection that turns out dead at MAIL FROM is replaced once by a fresh one.

With a ``Shaper``, a group starts only if its destination is within its limits (``delivery.shaping``);
otherwise its recipients come back ``held`` (not tried), and a throttle reply suspends the destination
and holds its recipients too: the queue runner parks such mail until the destination has room.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiosmtplib
import dns.asyncresolver

from mta_relay.delivery.client import (
    HopPolicy,
    HopUnavailable,
    TransactionResult,
    hop_facts,
    open_session,
    transact,
)
from mta_relay.delivery.mx import Hop, RouteError, resolve_hops
from mta_relay.delivery.outcome import RecipientOutcome, Result, everyone, held, with_hop
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.shaping import Limits, Match, Shaper, Throttle, is_throttle

Resolve = Callable[[str], Awaitable[list[Hop]]]
MATCH_TTL = 60.0  # seconds a destination keeps its shaping rule before its MX hosts are looked up again


@dataclass(frozen=True)
class Route:
    """Where mail goes: ``resolve`` maps a destination to its hosts; ``by_domain`` splits by domain.

    ``hop_policies``: one policy per host ``resolve`` returns, in order (smarthosts with their own port,
    TLS and credentials); empty: ``policy`` for every host. ``hosts``: the smarthosts' names, which
    shaping rules match like MX hosts. ``hold``: when set, every recipient is deferred with this text.
    """

    policy: HopPolicy
    resolve: Resolve
    by_domain: bool
    name: str = "default"
    hop_policies: tuple[HopPolicy, ...] = ()
    hosts: tuple[str, ...] = ()
    hold: str = ""

    def policy_at(self, index: int) -> HopPolicy:
        return self.hop_policies[index] if index < len(self.hop_policies) else self.policy


def smarthost_route(host: str, policy: HopPolicy, name: str = "default") -> Route:
    return smarthosts_route([(host, policy)], name)


def smarthosts_route(hosts: list[tuple[str, HopPolicy]], name: str = "default") -> Route:
    """Smarthosts tried in order: the next one when one cannot be reached or refuses the session."""
    hops = [Hop(host, host) for host, _policy in hosts]  # the system resolver finds addresses on connect

    async def resolve(_destination: str) -> list[Hop]:
        return list(hops)
    return Route(hosts[0][1], resolve, by_domain=False, name=name,
                 hop_policies=tuple(policy for _host, policy in hosts), hosts=tuple(h for h, _ in hosts))


def mx_route(resolver: dns.asyncresolver.Resolver, policy: HopPolicy, name: str = "default") -> Route:
    async def resolve(domain: str) -> list[Hop]:
        return await resolve_hops(domain, resolver)
    return Route(policy, resolve, by_domain=True, name=name)


def hold_route(name: str, text: str, policy: HopPolicy) -> Route:
    """A route whose mail waits (deferred with ``text``), e.g. one whose next hops were refused."""
    async def resolve(_destination: str) -> list[Hop]:
        raise RouteError(451, text)
    return Route(policy, resolve, by_domain=False, name=name, hold=text)


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].lower().rstrip(".")


@dataclass(frozen=True)
class Routes:
    """The route table: recipient domain, then sender domain, then the default (exact domains)."""

    default: Route
    by_recipient: Mapping[str, Route] = field(default_factory=dict)
    by_sender: Mapping[str, Route] = field(default_factory=dict)

    def select(self, sender: str, recipient: str) -> Route:
        return (self.by_recipient.get(domain_of(recipient))
                or (self.by_sender.get(domain_of(sender)) if sender else None)
                or self.default)


def group_recipients(recipients: list[str], by_domain: bool) -> dict[str, list[str]]:
    """Destination → its recipients, in first-seen order. Domains compare case-insensitively."""
    if not by_domain:
        return {"smarthost": list(recipients)}
    groups: dict[str, list[str]] = {}
    for rcpt in recipients:
        groups.setdefault(domain_of(rcpt), []).append(rcpt)
    return groups


def route_groups(routes: Routes, sender: str, recipients: list[str]) -> dict[tuple[str, str],
                                                                              tuple[Route, list[str]]]:
    """(route name, destination) → (route, its recipients), in first-seen order."""
    groups: dict[tuple[str, str], tuple[Route, list[str]]] = {}
    for rcpt in recipients:
        route = routes.select(sender, rcpt)
        destination = domain_of(rcpt) if route.by_domain else route.name
        groups.setdefault((route.name, destination), (route, []))[1].append(rcpt)
    return groups


class Deliverer:
    """``route``: one route for all mail, or a ``Routes`` table. ``shaper`` None: no shaping (the pool's
    per-destination limit only)."""

    def __init__(self, route: Route | Routes, pool: ConnectionPool, shaper: Shaper | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.routes = route if isinstance(route, Routes) else Routes(route)
        self.route = self.routes.default
        self.pool, self.shaper = pool, shaper
        self._clock = clock
        self._matches: dict[tuple[str, str], tuple[float, Match]] = {}

    async def deliver(self, sender: str, recipients: list[str], message: bytes) -> list[RecipientOutcome]:
        """One attempt for every recipient; ``message`` goes out exactly as given (CRLF, signed)."""
        groups = route_groups(self.routes, sender, recipients)
        if len(groups) == 1:  # one destination, as most mail has: no task and gather to wait on it
            [((_name, destination), (route, rcpts))] = groups.items()
            results = [await self._deliver_group(route, destination, sender, rcpts, message)]
        else:
            results = await asyncio.gather(*(self._deliver_group(route, destination, sender, rcpts, message)
                                             for (_name, destination), (route, rcpts) in groups.items()))
        by_rcpt = {o.recipient: o for group in results for o in group}
        return [by_rcpt[r] for r in recipients]

    def waits_for(self, sender: str, recipients: list[str]) -> str | None:
        """A destination key the message would only be held for, known without I/O: every destination it
        needs has a cached rule and no room now. None: try it (one may go, or it is not known yet). Lets
        the runner park mail before it prepares (reads, signs) it for nothing."""
        if self.shaper is None:
            return None
        now, key = self._clock(), None
        for (_name, destination), (route, _rcpts) in route_groups(self.routes, sender, recipients).items():
            cached = self._matches.get((route.name, destination))
            if route.hold or cached is None or cached[0] <= now or self.shaper.free(cached[1].key, now) > 0:
                return None
            key = key or cached[1].key
        return key

    async def _deliver_group(self, route: Route, destination: str, sender: str, rcpts: list[str],
                             message: bytes) -> list[RecipientOutcome]:
        if route.hold:
            return everyone(rcpts, 451, route.hold)
        if self.shaper is None:
            return await self._send(route, destination, sender, rcpts, message, None, None)
        hops: list[Hop] | None = None
        try:
            match, hops = await self._match(route, destination)
        except RouteError as error:
            return everyone(rcpts, error.code, error.text)
        if not self.shaper.try_acquire(match):
            return held(rcpts, match.key, f"4.4.5 waiting for {destination}'s shaping limits ({match.rule})")
        try:
            outcomes = await self._send(route, destination, sender, rcpts, message, match.limits, hops)
        finally:
            self.shaper.release(match.key)
        if any(o.result is Result.DELIVERED for o in outcomes):
            self.shaper.delivered(match.key)
        # Only a next hop's own reply is a throttle (it has a remote); our refusals, such as a TLS policy
        # not met (4.7.x too), are not: they defer and retry as usual.
        throttle = next((o for o in outcomes
                         if o.result is Result.DEFERRED and o.remote and is_throttle(*_reply(o))), None)
        if throttle is not None:
            self.shaper.throttled(match, Throttle(throttle.code, throttle.status, throttle.text))
            # Everyone not delivered or failed waits for the suspension to end; no failed try counted.
            outcomes = [dataclasses.replace(o, held=match.key) if o.result is Result.DEFERRED else o
                        for o in outcomes]
        return outcomes

    async def _match(self, route: Route, destination: str) -> tuple[Match, list[Hop] | None]:
        """The destination's shaping rule (cached ``MATCH_TTL``), and its hosts if they were looked up."""
        assert self.shaper is not None
        now = self._clock()
        cached = self._matches.get((route.name, destination))
        if cached is not None and cached[0] > now:
            return cached[1], None
        hops: list[Hop] | None = None
        if route.by_domain:
            hops = await route.resolve(destination)
            match = self.shaper.table.match(destination, list(dict.fromkeys(h.name for h in hops)))
        else:
            match = self.shaper.table.match(None, route.hosts, route=route.name)
        if len(self._matches) > 10_000:
            self._matches.clear()
        self._matches[(route.name, destination)] = (now + MATCH_TTL, match)
        return match, hops

    async def _send(self, route: Route, destination: str, sender: str, rcpts: list[str], message: bytes,
                    limits: Limits | None, hops: list[Hop] | None) -> list[RecipientOutcome]:
        async with self.pool.lease(f"{route.name}/{destination}") as lease:
            if lease.session is not None:  # an idle connection from the pool: it may have died unnoticed
                hop = hop_facts(lease.session)
                result = await transact(lease.session, sender, rcpts, message, lease.remote)
                if not result.lost_at_mail:
                    lease.uses += 1
                    lease.keep = result.reusable and _room(lease.uses, limits)
                    return with_hop(result.outcomes, *hop)
                # Dead before anything of the message went out (transact closed it): run the
                # transaction again at once on a fresh connection rather than defer the recipients.
                lease.session, lease.uses = None, 0
            try:
                lease.session, lease.remote = await self._connect(route, destination, limits, hops)
            except (RouteError, HopUnavailable) as error:
                reply = error.reply if isinstance(error, HopUnavailable) and error.reply else None
                outcomes = everyone(rcpts, error.code, error.text)
                if reply is not None and is_throttle(*reply):  # the host refused the session: throttled
                    outcomes = [dataclasses.replace(o, code=reply[0], text=reply[1], remote=destination)
                                for o in outcomes]
                return outcomes
            hop = hop_facts(lease.session)
            result = await self._transact(lease.session, sender, rcpts, message, lease.remote, limits)
            lease.uses += 1
            lease.keep = result.reusable and _room(lease.uses, limits)
            return with_hop(result.outcomes, *hop)

    async def _transact(self, session: aiosmtplib.SMTP, sender: str, rcpts: list[str], message: bytes,
                        remote: str, limits: Limits | None) -> TransactionResult:
        if limits is None:
            return await transact(session, sender, rcpts, message, remote)
        try:
            async with asyncio.timeout(limits.transaction_timeout):
                return await transact(session, sender, rcpts, message, remote)
        except TimeoutError:
            session.close()  # the duplicate window: the next hop may have the message if it came late
            return TransactionResult(everyone(rcpts, 451, f"4.4.2 {remote}: transaction timed out after "
                                                f"{limits.transaction_timeout:g} s", remote), reusable=False)

    async def _connect(self, route: Route, destination: str, limits: Limits | None,
                       hops: list[Hop] | None) -> tuple[aiosmtplib.SMTP, str]:
        last: HopUnavailable | None = None
        throttled: HopUnavailable | None = None
        for index, hop in enumerate(hops if hops is not None else await route.resolve(destination)):
            policy = route.policy_at(index)
            if limits is not None:
                policy = dataclasses.replace(policy, connect_timeout=limits.connect_timeout,
                                             command_timeout=limits.transaction_timeout)
            try:
                return await open_session(hop, policy), hop.name
            except HopUnavailable as error:
                last = error
                if error.reply is not None and is_throttle(*error.reply):
                    throttled = error
        assert last is not None  # resolve returns at least one hop or raises
        raise throttled or last


def _room(uses: int, limits: Limits | None) -> bool:
    return limits is None or uses < limits.messages_per_connection


def _reply(o: RecipientOutcome) -> tuple[int, str]:
    return o.code, o.text
