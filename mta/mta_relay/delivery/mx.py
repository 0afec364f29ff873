"""Where a domain's mail goes (RFC 5321 §5.1): MX hosts by preference, else the domain's own A/AAAA.

Resolution uses dnspython's async resolver; names are absolute (no search list). Errors say whether
they are permanent (the domain does not exist, or publishes a null MX) or worth a retry.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from mta_relay.delivery.hop_tls import HopTls


@dataclass(frozen=True)
class Hop:
    """One host to try: its name (TLS server name, reports) and one of its addresses. ``tls``: what the
    destination's TLS policy requires of it (``tls_policy``); None: the route's ``HopPolicy.tls``."""

    name: str
    address: str
    tls: HopTls | None = None


class RouteError(Exception):
    """No host to try. ``code`` is an SMTP-like reply code, so it classifies like a remote answer."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text


def make_resolver(nameservers: list[str], port: int, timeout: float) -> dns.asyncresolver.Resolver:
    """A resolver for ``nameservers`` (empty: the system's)."""
    if not nameservers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(nameservers)
        resolver.port = port
    resolver.lifetime = timeout
    return resolver


def order_mx(records: list[tuple[int, str]], rng: random.Random | None = None) -> list[str]:
    """Lowest preference first; hosts of equal preference in random order, to spread load (RFC 5321)."""
    shuffler = rng or random.Random()  # noqa: S311 - load spreading, not security
    shuffled = list(records)
    shuffler.shuffle(shuffled)
    return [host for _pref, host in sorted(shuffled, key=lambda record: record[0])]


async def mx_hosts(domain: str, resolver: dns.asyncresolver.Resolver) -> list[str]:
    """The host names to try for ``domain``, best first."""
    qname = dns.name.from_text(domain)
    try:
        answer = await resolver.resolve(qname, "MX", search=False)
    except dns.resolver.NXDOMAIN:
        raise RouteError(550, f"5.1.2 domain {domain} does not exist") from None
    except dns.resolver.NoAnswer:
        return [domain]  # no MX: the domain itself is the implicit MX
    except dns.exception.DNSException as error:
        raise RouteError(451, f"4.4.3 MX lookup for {domain} failed: {type(error).__name__}") from None
    records = [(rr.preference, rr.exchange.to_text(omit_final_dot=True)) for rr in answer]
    if len(records) == 1 and records[0][1] in ("", "."):
        raise RouteError(556, f"5.1.10 domain {domain} accepts no mail (null MX)")
    return order_mx([(pref, host) for pref, host in records if host not in ("", ".")])


async def addresses(host: str, resolver: dns.asyncresolver.Resolver) -> list[str]:
    """A then AAAA addresses of ``host``; empty when it has none or the lookups fail."""
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(dns.name.from_text(host), rdtype, search=False)
        except dns.exception.DNSException:
            continue
        found.extend(rr.address for rr in answer)
    return found


async def resolve_hops(domain: str, resolver: dns.asyncresolver.Resolver) -> list[Hop]:
    """Every (host, address) to try for ``domain``, in order."""
    hops = [Hop(host, address) for host in await mx_hosts(domain, resolver)
            for address in await addresses(host, resolver)]
    if not hops:
        raise RouteError(451, f"4.4.4 no address for any mail host of {domain}")
    return hops
