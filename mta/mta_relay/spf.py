"""Does a domain's SPF record authorise this cluster? (for AnyDomain credentials)

Authorised means the domain's single ``v=spf1`` record reaches ``include:<spfInclude>``, directly or via
nested ``include:`` / ``redirect=``, within RFC 7208's budget of 10 DNS lookups. We check the published
delegation to the cluster, not an evaluation against one IP: the question is "may this cluster send for
the domain", which is exactly what the include says. DNS failures are temporary (None), so the client
gets a 4xx and retries. Answers are cached briefly; the resolver is configurable so tests point it at a
DNS server on loopback.
"""

from __future__ import annotations

import time

import dns.asyncresolver
import dns.exception
import dns.resolver

_LOOKUP_BUDGET = 10
_POSITIVE_TTL, _NEGATIVE_TTL = 300.0, 60.0


class _TempError(Exception):
    pass


class SpfChecker:
    def __init__(self, include: str | None, nameservers: list[str], port: int, timeout: float) -> None:
        self.include = include.lower().rstrip(".") if include else None
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = nameservers
            self._resolver.port = port
        self._resolver.lifetime = timeout
        self._cache: dict[str, tuple[float, bool]] = {}

    async def __call__(self, domain: str) -> bool | None:
        if self.include is None:
            return False
        now = time.monotonic()
        cached = self._cache.get(domain)
        if cached and cached[0] > now:
            return cached[1]
        try:
            verdict = await self._reaches(domain, [_LOOKUP_BUDGET], set())
        except _TempError:
            return None
        self._cache[domain] = (now + (_POSITIVE_TTL if verdict else _NEGATIVE_TTL), verdict)
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: attackers choose the domains
        return verdict

    async def _reaches(self, domain: str, budget: list[int], seen: set[str]) -> bool:
        if domain in seen or budget[0] <= 0:
            return False
        seen.add(domain)
        budget[0] -= 1
        record = await self._spf_record(domain)
        if record is None:
            return False
        for term in record.split()[1:]:
            name, _, target = term.lstrip("+?~-").partition(":")
            if name.lower() == "include" and target:
                target = target.lower().rstrip(".")
                if target == self.include or await self._reaches(target, budget, seen):
                    return True
            key, eq, value = term.partition("=")
            if eq and key.lower() == "redirect":
                return await self._reaches(value.lower().rstrip("."), budget, seen)
        return False

    async def _spf_record(self, domain: str) -> str | None:
        try:
            answer = await self._resolver.resolve(domain, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.DNSException, OSError):
            raise _TempError from None
        records = [b"".join(r.strings).decode("ascii", "replace") for r in answer]
        spf = [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
        return spf[0] if len(spf) == 1 else None  # none, or several (a permerror): not authorised
