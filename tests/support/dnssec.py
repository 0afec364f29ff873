"""DNSSEC for tests: zones really signed with dnspython (``dns.dnssec.sign_zone``, an Ed25519 key made with
cryptography) and served by ``DnsServer``, and a validating resolver in front of it that checks the
signatures against the zones' trust anchors, as a validating recursive resolver (Unbound, Knot Resolver)
does for the relay in production:

- a name under a trusted zone whose answer validates gets the AD bit;
- one whose signatures do not validate (bogus) gets SERVFAIL;
- names under no trusted zone (unsigned), NXDOMAIN and NODATA answers come back without AD (this
  stand-in does not validate denial of existence).

    zone = SignedZone("example.net")
    zone.add("_25._tcp.mx.example.net", "TLSA", "3 1 1 ab12...")
    zone.publish(dns_server)                      # signed records and RRSIGs
    with ValidatingResolver(dns_server) as resolver:
        resolver.trust(zone)                      # its DNSKEY is the trust anchor
"""

from __future__ import annotations

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ed25519

from support.dnsserver import DnsServer


class SignedZone:
    def __init__(self, origin: str) -> None:
        self.origin = dns.name.from_text(origin)
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.dnskey = dns.dnssec.make_dnskey(self.key.public_key(), dns.dnssec.Algorithm.ED25519,
                                             flags=dns.dnssec.Flag.ZONE | dns.dnssec.Flag.SEP)
        self._records: list[tuple[str, str, str]] = []

    def add(self, name: str, rdtype: str, *values: str) -> None:
        self._records.extend((name, rdtype, value) for value in values)

    def publish(self, server: DnsServer, bogus: dict[tuple[str, str], str] | None = None) -> None:
        """Sign the zone and serve every record and signature from ``server``. ``bogus``: (name, type) →
        a value served instead of the signed one, under the original signature (which then fails)."""
        zone = dns.zone.Zone(self.origin, relativize=False)
        with zone.writer() as txn:
            txn.add(self.origin, 3600, _rdata("SOA", f"ns.{self.origin} hostmaster.{self.origin} 1 7200 "
                                                     "3600 1209600 3600"))
            txn.add(self.origin, 3600, _rdata("NS", f"ns.{self.origin}"))
            for name, rdtype, value in self._records:
                txn.add(dns.name.from_text(name), 60, _rdata(rdtype, value))
        dns.dnssec.sign_zone(zone, keys=[(self.key, self.dnskey)], lifetime=86400)
        replaced = {(dns.name.from_text(n), dns.rdatatype.from_text(t)): v
                    for (n, t), v in (bogus or {}).items()}
        for name, node in zone.items():
            absolute = name.derelativize(self.origin)
            for rdataset in node:
                key = (absolute, rdataset.rdtype)
                values = ([replaced[key]] if key in replaced else
                          [rd.to_text(origin=self.origin, relativize=False) for rd in rdataset])
                server.add(absolute.to_text(), dns.rdatatype.to_text(rdataset.rdtype), *values,
                           ttl=rdataset.ttl)


def _rdata(rdtype: str, value: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), value)


class ValidatingResolver(DnsServer):
    """A validating resolver on loopback that forwards every query to ``upstream`` (see module doc)."""

    def __init__(self, upstream: DnsServer, address: str = "127.0.0.1") -> None:
        super().__init__(address)
        self.upstream = upstream
        self.anchors: dict[dns.name.Name, dns.rdtypes.ANY.DNSKEY.DNSKEY] = {}

    def trust(self, zone: SignedZone) -> None:
        self.anchors[zone.origin] = zone.dnskey

    def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        question = query.question[0]
        self.queries.append((question.name.to_text(omit_final_dot=True),
                             dns.rdatatype.to_text(question.rdtype)))
        upstream = self._ask(question.name, question.rdtype)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if query.edns >= 0:
            response.use_edns(0, query.ednsflags & dns.flags.DO, 1232)
        response.set_rcode(upstream.rcode())
        records = [rrset for rrset in upstream.answer if rrset.rdtype != dns.rdatatype.RRSIG]
        response.answer.extend(records)
        zone = next((origin for origin in sorted(self.anchors, key=len, reverse=True)
                     if question.name.is_subdomain(origin)), None)
        if zone is None or upstream.rcode() != dns.rcode.NOERROR or not records:
            return response.to_wire(max_size=65535)
        try:
            keys = self._keys(zone)
            for rrset in records:
                dns.dnssec.validate(rrset, _signatures(upstream, rrset), {zone: keys})
        except (dns.dnssec.ValidationFailure, LookupError):
            bogus = dns.message.make_response(query)
            bogus.set_rcode(dns.rcode.SERVFAIL)
            return bogus.to_wire()
        response.flags |= dns.flags.AD
        return response.to_wire(max_size=65535)

    def _ask(self, name: dns.name.Name, rdtype: int) -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, rdtype, want_dnssec=True), self.upstream.address,
                             port=self.upstream.port, timeout=2)

    def _keys(self, zone: dns.name.Name) -> dns.rrset.RRset:
        """The zone's DNSKEY RRset, validated against the trust anchor (its own key signs it)."""
        reply = self._ask(zone, dns.rdatatype.DNSKEY)
        [keys] = [r for r in reply.answer if r.rdtype == dns.rdatatype.DNSKEY]
        if self.anchors[zone] not in keys:
            raise dns.dnssec.ValidationFailure("the trust anchor is not in the DNSKEY RRset")
        anchor = dns.rrset.from_rdata(zone, keys.ttl, self.anchors[zone])
        dns.dnssec.validate(keys, _signatures(reply, keys), {zone: anchor})
        return keys


def _signatures(reply: dns.message.Message, rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    for sigs in reply.answer:
        if sigs.rdtype == dns.rdatatype.RRSIG and sigs.name == rrset.name and sigs.covers == rrset.rdtype:
            return sigs
    for sigs in reply.answer:  # DnsServer sends RRSIGs as one RRset per name
        if sigs.rdtype == dns.rdatatype.RRSIG and sigs.name == rrset.name:
            return sigs
    raise LookupError(f"no signature for {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}")
