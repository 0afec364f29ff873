"""Outbound TLS policy for MX delivery: before connecting, decide what TLS each MX host of a destination
must have — DANE (RFC 7672), MTA-STS (RFC 8461), or a route's forced policy — and report every hop's
outcome (log line, ``mta_delivery_tls_total``). See docs/delivery.md, "Outbound TLS policy".

This module does the I/O and the precedence; the formats and checks are pure elsewhere: ``mta_sts``
(TXT record, policy file, MX patterns, cache rules and cache file), ``dane`` (TLSA matching),
``hop_tls`` (the requirement handed to ``client`` on each ``Hop``, and the report it gives back).

- MTA-STS: the ``_mta-sts`` TXT record through the relay's resolver (cached by TTL); the policy over
  HTTPS (aiohttp, certificate verified, no redirects, 64 KB, ``FETCH_TIMEOUT``), host names resolved
  through the same resolver; policies cached per ``mta_sts`` and kept in ``<spool>/state/mta-sts.json``.
- DANE: TLSA records count only when the answer carries the AD bit from the validating resolver the
  settings declare trusted (``delivery.tls.dnssecResolver``), and only for MX hosts whose MX RRset was
  itself validated. A TLSA lookup that fails (SERVFAIL: bogus signatures, or no answer) makes that host
  unusable (RFC 7672 §2.2), so mail is not sent to it in plaintext or unauthenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdtypes.ANY.TLSA
import dns.resolver
from aiohttp.abc import AbstractResolver, ResolveResult
from prometheus_client import Counter

from mta_relay.delivery import mta_sts
from mta_relay.delivery.dane import Tlsa
from mta_relay.delivery.hop_tls import Applied, HopTls, Result, TlsReport
from mta_relay.delivery.mx import Hop, RouteError, addresses, resolve_hops
from mta_relay.state_files import Debounced, load

log = logging.getLogger("mta_relay.delivery.tls")
FETCH_TIMEOUT = 10.0  # seconds for the whole policy fetch (RFC 8461 §3.3 asks for a timeout)
FAILED_FETCH_BACKOFF = 300.0  # a failed fetch for the same TXT id is not tried again sooner
MAX_CACHED = 50_000  # domains kept in memory; expired ones are dropped beyond this


class TlsPolicy(StrEnum):
    """A route's TLS policy (``delivery.tls.policy``)."""

    AUTO = "Auto"  # DANE where validated, else MTA-STS, else opportunistic
    MTA_STS = "MtaSts"  # MTA-STS only (no TLSA lookups), else opportunistic
    DANE = "Dane"  # DANE only (no MTA-STS), else opportunistic
    OPPORTUNISTIC = "Opportunistic"  # STARTTLS when offered, unverified; nothing looked up
    REQUIRED = "Required"  # DANE where validated, else STARTTLS with a PKIX-valid certificate
    NONE = "None"  # plaintext, no STARTTLS


class TlsObserver:
    """Every hop's TLS outcome: a counter and a log line (failures at WARNING, the rest at DEBUG)."""

    def __init__(self, counter: Counter | None = None) -> None:
        self.counter = counter
        self.reports: list[tuple[Hop, TlsReport]] | None = None  # tests set a list to collect them

    def __call__(self, hop: Hop, report: TlsReport) -> None:
        if self.counter is not None:
            self.counter.labels(str(report.applied), str(report.result)).inc()
        if self.reports is not None:
            self.reports.append((hop, report))
        fields = {"event": "hop_tls", "mx": hop.name, "address": hop.address,
                  "domain": hop.tls.domain if hop.tls is not None else "", "policy": str(report.applied),
                  "starttls": report.offered, "verified": report.verified, "result": str(report.result),
                  "detail": report.detail}
        if report.result.failed:
            enforced = report.applied is not Applied.MTA_STS_TESTING
            fields["action"] = "refused" if enforced else "delivered anyway (testing)"
            log.warning("TLS policy check failed", extra={"fields": fields})
        else:
            log.debug("TLS", extra={"fields": fields})

    def policy_failed(self, domain: str, result: str, detail: str) -> None:
        """An MTA-STS policy could not be fetched or parsed (RFC 8460 result type in ``result``)."""
        if self.counter is not None:
            self.counter.labels("mta-sts", result).inc()
        log.warning("MTA-STS policy not fetched", extra={"fields": {
            "event": "mta_sts_policy_failed", "domain": domain, "result": result, "detail": detail}})


# --- MTA-STS ----------------------------------------------------------------------------------------
class FetchError(Exception):
    def __init__(self, result: str, detail: str) -> None:
        super().__init__(detail)
        self.result, self.detail = result, detail


class _Resolver(AbstractResolver):
    """aiohttp's host name look-ups through the relay's resolver (not the system's), as MX look-ups."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await addresses(host, self._resolver)
        if not found:
            raise OSError(f"no address for {host}")
        return [ResolveResult(hostname=host, host=address, port=port,
                              family=socket.AF_INET6 if ":" in address else socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST) for address in found]

    async def close(self) -> None:
        return None


async def fetch_policy(domain: str, resolver: dns.asyncresolver.Resolver, context: ssl.SSLContext,
                       port: int = 443) -> mta_sts.Policy:
    """The policy at ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (RFC 8461 §3.3): 200 only,
    no redirects, ``text/plain``, at most 64 KB, certificate valid for ``mta-sts.<domain>``."""
    host = mta_sts.policy_host(domain)
    url = f"https://{host}{'' if port == 443 else f':{port}'}{mta_sts.POLICY_PATH}"
    connector = aiohttp.TCPConnector(ssl=context, resolver=_Resolver(resolver), use_dns_cache=False)
    try:
        async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                         cookie_jar=aiohttp.DummyCookieJar()) as session, \
                session.get(url, allow_redirects=False,
                            timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT)) as response:
            if response.status != 200:
                raise FetchError("sts-policy-fetch-error", f"HTTP {response.status}")
            if response.content_type != "text/plain":
                raise FetchError("sts-policy-invalid", "the policy is not text/plain")
            body = await response.content.read(mta_sts.MAX_POLICY_BYTES + 1)
    except aiohttp.ClientConnectorCertificateError as error:
        raise FetchError("sts-webpki-invalid", type(error.certificate_error).__name__) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise FetchError("sts-policy-fetch-error", type(error).__name__) from None
    if len(body) > mta_sts.MAX_POLICY_BYTES:
        raise FetchError("sts-policy-invalid", "the policy is larger than 64 KB")
    try:
        return mta_sts.parse_policy(body.decode("utf-8"))
    except (UnicodeDecodeError, mta_sts.PolicyError) as error:
        raise FetchError("sts-policy-invalid", str(error) if isinstance(error, mta_sts.PolicyError)
                         else "the policy is not UTF-8") from None


class StsCache:
    """The policies in force, by domain, kept in ``path`` (loaded on first use, written debounced).
    One per file: a deliverer rebuilt on reload keeps the same cache."""

    _by_path: dict[Path, StsCache] = {}  # noqa: RUF012 - one cache per file for the process

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.policies: dict[str, mta_sts.CachedPolicy] = {}
        self._loaded = path is None
        self._saver = Debounced(path, self._encode) if path is not None else None

    @classmethod
    def at(cls, path: Path) -> StsCache:
        if path not in cls._by_path:
            cls._by_path[path] = cls(path)
        return cls._by_path[path]

    async def load(self) -> None:
        if not self._loaded and self.path is not None:
            stored = await asyncio.to_thread(load, self.path, mta_sts.decode_cache, {})
            self._loaded = True
            self.policies = {**stored, **self.policies}

    def put(self, domain: str, cached: mta_sts.CachedPolicy | None, now: float) -> None:
        if cached is None:
            self.policies.pop(domain, None)
        else:
            self.policies[domain] = cached
        if len(self.policies) > MAX_CACHED:
            self.policies = {d: c for d, c in self.policies.items() if c.fresh(now)}
        if self._saver is not None:
            self._saver.changed()

    async def flush(self) -> None:
        if self._saver is not None:
            await self._saver.flush()

    def _encode(self) -> bytes:
        return mta_sts.encode_cache(self.policies, time.time())


class StsPolicies:
    """The MTA-STS policy in force for a domain: TXT discovery, fetch, cache rules."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, context: ssl.SSLContext, cache: StsCache,
                 observer: TlsObserver, *, port: int = 443, wall: Callable[[], float] = time.time) -> None:
        self.resolver, self.context, self.cache, self.observer = resolver, context, cache, observer
        self.port, self._wall = port, wall
        self._locks: dict[str, asyncio.Lock] = {}
        self._failed: dict[str, tuple[str, float]] = {}  # domain → (TXT id, no new fetch before)
        self.fetches = 0

    async def policy(self, domain: str) -> mta_sts.Policy | None:
        """The policy in force (mode none counts as no policy), or None."""
        await self.cache.load()
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:
            cached = await self._current(domain)
        if not lock.locked():
            self._locks.pop(domain, None)
        if cached is None or cached.policy.mode is mta_sts.Mode.NONE:
            return None
        return cached.policy

    async def _current(self, domain: str) -> mta_sts.CachedPolicy | None:
        cached = self.cache.policies.get(domain)
        txt_id = await self._txt_id(domain)
        now = self._wall()
        step = mta_sts.plan(cached, txt_id, now)
        if step is mta_sts.Step.NO_POLICY:
            return None
        if step is mta_sts.Step.USE_CACHED or txt_id is None:
            return cached
        failed = self._failed.get(domain)
        if failed is not None and failed[0] == txt_id and now < failed[1]:
            return cached if cached is not None and cached.fresh(now) else None
        self.fetches += 1
        try:
            fetched: mta_sts.Policy | None = await fetch_policy(domain, self.resolver, self.context,
                                                                self.port)
            self._failed.pop(domain, None)
        except FetchError as error:
            fetched = None
            self._failed[domain] = (txt_id, now + FAILED_FETCH_BACKOFF)
            self.observer.policy_failed(domain, error.result, error.detail)
        current = mta_sts.after_fetch(cached, txt_id, fetched, now)
        if current is not cached:
            self.cache.put(domain, current, now)
        return current

    async def _txt_id(self, domain: str) -> str | None:
        try:
            answer = await self.resolver.resolve(dns.name.from_text(mta_sts.txt_name(domain)), "TXT",
                                                 search=False)
        except dns.exception.DNSException:
            return None  # no record, or the lookup failed: the cache decides
        return mta_sts.parse_txt([b"".join(rr.strings).decode("utf-8", "replace") for rr in answer])


# --- DANE -------------------------------------------------------------------------------------------
class LookupFailed(Exception):
    """The validating resolver gave no usable answer (SERVFAIL — bogus signatures —, or a timeout)."""


def trusted_resolver(nameservers: list[str], port: int, timeout: float) -> dns.asyncresolver.Resolver:
    """A resolver for the validating resolver whose AD bit is trusted: asks with DO and AD set."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = list(nameservers)
    resolver.port = port
    resolver.lifetime = timeout
    resolver.use_edns(0, dns.flags.DO, 1232)
    resolver.flags = dns.flags.RD | dns.flags.AD
    resolver.cache = dns.resolver.LRUCache(10_000)
    return resolver


class SecureDns:
    """Look-ups whose answers count as DNSSEC-validated only with the AD bit of the trusted resolver."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def lookup(self, name: str, rdtype: str) -> tuple[list[Any], bool]:
        """(records, validated); no records for NXDOMAIN and NODATA; LookupFailed otherwise."""
        try:
            answer = await self.resolver.resolve(dns.name.from_text(name), rdtype, search=False,
                                                 raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return [], False
        except dns.exception.DNSException as error:
            raise LookupFailed(type(error).__name__) from None
        secure = bool(answer.response.flags & dns.flags.AD)
        return (list(answer.rrset) if answer.rrset is not None else []), secure

    async def tlsa(self, host: str, port: int = 25) -> list[Tlsa] | None:
        """The validated TLSA records of ``_<port>._tcp.<host>``; None when there are none or they are
        not validated; LookupFailed when the look-up failed."""
        records, secure = await self.lookup(f"_{port}._tcp.{host}", "TLSA")
        if not secure or not records:
            return None
        return [Tlsa(rr.usage, rr.selector, rr.mtype, bytes(rr.cert)) for rr in records
                if isinstance(rr, dns.rdtypes.ANY.TLSA.TLSA)]


_FAILED = object()  # a host whose TLSA look-up failed


class OutboundTls:
    """The MX route's ``resolve``: the hops of a destination, each with the TLS it must have.

    Precedence (RFC 8461 §2): a host with validated TLSA records gets DANE; otherwise the domain's
    MTA-STS policy (enforce: hosts it does not name are skipped; testing: used, the mismatch reported);
    otherwise ``Required`` or opportunistic TLS, as the route's policy says."""

    def __init__(self, policy: TlsPolicy, resolver: dns.asyncresolver.Resolver, observer: TlsObserver, *,
                 sts: StsPolicies | None = None, dane: SecureDns | None = None) -> None:
        if policy is TlsPolicy.DANE and dane is None:
            raise ValueError("the Dane policy needs a trusted DNSSEC resolver")
        self.policy, self.resolver, self.observer = policy, resolver, observer
        self.sts, self.dane = sts, dane

    async def hops(self, domain: str) -> list[Hop]:
        hops = await resolve_hops(domain, self.resolver)
        if self.policy in (TlsPolicy.NONE, TlsPolicy.OPPORTUNISTIC):
            applied = Applied.NONE if self.policy is TlsPolicy.NONE else Applied.OPPORTUNISTIC
            return [dataclasses.replace(h, tls=HopTls(applied, domain=domain)) for h in hops]
        dane = await self._dane(domain, hops) if self.policy in (
            TlsPolicy.AUTO, TlsPolicy.DANE, TlsPolicy.REQUIRED) else {}
        sts = await self.sts.policy(domain) if self.sts is not None and self.policy in (
            TlsPolicy.AUTO, TlsPolicy.MTA_STS) else None
        usable: list[Hop] = []
        for hop in hops:
            tlsa = dane.get(hop.name)
            if tlsa is _FAILED:
                self.observer(hop, TlsReport(Applied.DANE, Result.DNSSEC_INVALID, False,
                                             "TLSA look-up failed"))
                continue
            if isinstance(tlsa, list):
                usable.append(dataclasses.replace(hop, tls=HopTls(Applied.DANE, tuple(tlsa),
                                                                  (hop.name, domain), domain)))
            elif sts is not None:
                applied = (Applied.MTA_STS_ENFORCE if sts.mode is mta_sts.Mode.ENFORCE
                           else Applied.MTA_STS_TESTING)
                if not sts.allows(hop.name):
                    self.observer(hop, TlsReport(applied, Result.MX_NOT_IN_POLICY, False,
                                                 "the MX host is not named by the domain's policy"))
                    if applied is Applied.MTA_STS_ENFORCE:
                        continue
                usable.append(dataclasses.replace(hop, tls=HopTls(applied, domain=domain)))
            else:
                applied = Applied.REQUIRED if self.policy is TlsPolicy.REQUIRED else Applied.OPPORTUNISTIC
                usable.append(dataclasses.replace(hop, tls=HopTls(applied, domain=domain)))
        if not usable:
            raise RouteError(451, f"4.7.5 no MX host of {domain} can give the TLS required by its "
                                  "MTA-STS or DANE records")
        return usable

    async def _dane(self, domain: str, hops: list[Hop]) -> dict[str, object]:
        """MX host → its validated TLSA records, or _FAILED; hosts without DANE are left out. Nothing
        when the MX RRset itself is not validated: an attacker could have chosen the hosts."""
        if self.dane is None:
            return {}
        try:
            mx, secure = await self.dane.lookup(domain, "MX")
        except LookupFailed:
            return {}
        if not secure and mx:
            return {}
        if not mx:  # no MX: the domain is its own (implicit) MX; its address records must validate
            with contextlib.suppress(LookupFailed):
                _, secure = await self.dane.lookup(domain, "A")
            if not secure:
                return {}
        found: dict[str, object] = {}
        for host in dict.fromkeys(h.name for h in hops):
            try:
                tlsa = await self.dane.tlsa(host)
            except LookupFailed:
                found[host] = _FAILED
                continue
            if tlsa is not None:
                found[host] = tlsa
        return found
