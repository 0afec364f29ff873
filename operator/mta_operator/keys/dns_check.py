"""TXT lookups for the SendingDomain check (dnspython), against a configurable nameserver."""

from __future__ import annotations

from collections.abc import Iterable

import dns.exception
import dns.resolver


def resolver(nameserver: str | None, timeout: float = 3.0) -> dns.resolver.Resolver:
    if nameserver is None:
        res = dns.resolver.Resolver()
    else:
        host, _, port = nameserver.rpartition(":") if nameserver.count(":") == 1 else (nameserver, "", "53")
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [host]
        res.port = int(port)
    res.lifetime = timeout
    return res


def txt(res: dns.resolver.Resolver, names: Iterable[str]) -> dict[str, list[str]]:
    """Name → TXT strings (each record's character-strings joined); absent or failing names → []."""
    out: dict[str, list[str]] = {}
    for name in set(names):
        try:
            answer = res.resolve(name, "TXT")
        except (dns.exception.DNSException, OSError):
            out[name] = []
            continue
        out[name] = [b"".join(r.strings).decode(errors="replace") for r in answer]
    return out
