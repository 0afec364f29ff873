"""Per-credential policy, as pure decisions over one config generation (no I/O but the SPF callback).

Order (the design's): source IP against allowedIPs (at AUTH, and again per transaction so a reload takes
effect), MAIL FROM domain against the credential's domains mode, From/Sender header domains at the end
of DATA, then quota (``quota``).

Address rules: the domain is what follows the last ``@``, lower-cased, compared exactly, so
``x@example.com.evil.com`` is evil.com's subdomain and ``"x@example.com"@evil.com`` is evil.com. A source
route (``<@a:x@b>``) is ignored as RFC 5321 says: the address is ``x@b``. ``x%evil.com@example.com`` is an
example.com address (``%`` has no routing meaning here).

The null sender ``<>`` (``""`` here, as in the spool) is refused with its own reply unless the credential
has ``allowNullSender``: an application has no business sending bounces (the delivery side makes its own),
but a mail server relaying through the cluster (a Postfix with this cluster as its relayhost) sends its
own bounces and delivery reports from ``<>``. Such a message still passes the header checks.

Headers: exactly one From and at most one Sender, or the message is malformed (its own 5.6.0 replies);
every address in From (and in Sender, if present) must be on an allowed domain.
With ``allowSenderHeader`` a message may instead carry a foreign From when its Sender is allowed (the
RFC 5322 "on behalf of" form).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from email.utils import getaddresses

from mta_relay import replies
from mta_relay.config import Credential, IPNetwork, RelayConfig
from mta_relay.header_fields import header_values
from mta_relay.replies import Reply

# AnyDomain: does this domain's SPF authorise the cluster? True / False / None (temporary failure)
SpfCheck = Callable[[str], Awaitable[bool | None]]


def client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Normalise a peer address: drop an IPv6 zone, unwrap IPv4-mapped IPv6 (dual-stack sockets)."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_in(ip: str, networks: list[IPNetwork]) -> bool:
    address = client_address(ip)
    return any(address in net for net in networks)


def domain_of(address: str) -> str | None:
    local, at, domain = address.rpartition("@")
    return domain.lower().rstrip(".") if at and local and domain else None


class Policy:
    """Lookups and decisions for one config generation; swapped whole on reload."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.by_username = {c.username: c for c in config.credentials}
        # most specific network first, so an IP covered by two SourceIP credentials is deterministic
        self._by_source = sorted(((net, c) for c in config.credentials if c.authentication == "SourceIP"
                                  for net in c.allowed_ips), key=lambda pair: -pair[0].prefixlen)
        self.cluster_domains = frozenset(d.domain for d in config.settings.domains)
        self.cram_md5 = any("CRAM-MD5" in c.mechanisms for c in config.credentials)

    def password_credential(self, username: str) -> Credential | None:
        cred = self.by_username.get(username)
        return cred if cred is not None and cred.authentication == "Password" else None

    def source_ip_credential(self, ip: str) -> Credential | None:
        address = client_address(ip)
        return next((cred for net, cred in self._by_source if address in net), None)

    def current(self, username: str, ip: str) -> Credential | Reply:
        """The session's credential as the config now stands (it may have been removed or narrowed)."""
        cred = self.by_username.get(username)
        if cred is None:
            return replies.AUTH_REQUIRED
        if cred.suspended:  # suspended since the session authenticated: stops as a deletion would
            return replies.CREDENTIAL_SUSPENDED
        if cred.allowed_ips and not ip_in(ip, cred.allowed_ips):
            return replies.IP_NOT_AUTHORIZED
        return cred

    async def domain_allowed(self, cred: Credential, domain: str | None, spf: SpfCheck) -> bool | None:
        if domain is None:
            return False
        mode = cred.domains.mode
        if mode == "Specific":
            return domain in cred.domains.names
        if mode == "AllClusterDomains":
            return domain in self.cluster_domains
        return await spf(domain)

    async def check_sender(self, cred: Credential, mail_from: str, spf: SpfCheck) -> Reply | None:
        if mail_from in ("", "<>"):
            return None if cred.allow_null_sender else replies.NULL_SENDER
        verdict = await self.domain_allowed(cred, domain_of(mail_from), spf)
        if verdict is None:
            return replies.SPF_TEMPFAIL
        return None if verdict else replies.SENDER_DOMAIN

    async def check_headers(self, cred: Credential, message: bytes, spf: SpfCheck,
                            fields: dict[str, list[str]] | None = None) -> Reply | None:
        """``fields``: the message's ``header_values`` for (at least) from and sender, when the caller
        has read them already."""
        if fields is None:
            fields = header_values(message, "from", "sender")
        froms, senders = fields["from"], fields["sender"]
        if len(froms) != 1:
            return replies.FROM_COUNT
        if len(senders) > 1:
            return replies.SENDER_COUNT
        if not all(_addresses(value) for value in (*froms, *senders)):
            return replies.HEADER_ADDRESS
        if senders:
            sender_ok = await self._all_allowed(cred, senders[0], spf)
            if sender_ok and cred.allow_sender_header:
                return None  # on behalf of a foreign author: the Sender is what we vouch for
            if not sender_ok:
                return replies.SPF_TEMPFAIL if sender_ok is None else replies.HEADER_DOMAIN
        from_ok = await self._all_allowed(cred, froms[0], spf)
        if from_ok is None:
            return replies.SPF_TEMPFAIL
        return None if from_ok else replies.HEADER_DOMAIN

    async def _all_allowed(self, cred: Credential, header: str, spf: SpfCheck) -> bool | None:
        addresses = _addresses(header)
        if not addresses:
            return False
        verdicts = [await self.domain_allowed(cred, domain_of(addr), spf) for addr in addresses]
        if False in verdicts:
            return False
        return None if None in verdicts else True


def _addresses(header: str) -> list[str]:
    """The addresses of a From/Sender value; empty when any part of it is not an address."""
    addresses = [addr for _, addr in getaddresses([header])]
    return addresses if addresses and all(addresses) else []
