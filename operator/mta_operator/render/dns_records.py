"""The DNS records a SendingDomain needs published, and the pure check of what a resolver returned."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from mta_operator.api import DnsRecord, RecordPurpose, SendingDomain

OWNERSHIP_LABEL = "_mta-operator"


def ownership_token(domain: SendingDomain) -> str:
    # From the object's UID: stable for this object, unguessable for someone else's.
    return "mta-operator-verification=" + hashlib.sha256(str(domain.metadata.uid).encode()).hexdigest()[:32]


def records(domain: SendingDomain, spf_include: str, dkim_txt: str | None) -> list[DnsRecord]:
    name = domain.spec.domain
    out = []
    if dkim_txt is not None:
        out.append(DnsRecord(purpose=RecordPurpose.DKIM, value=dkim_txt,
                             name=f"{domain.spec.dkim.selector}._domainkey.{name}"))
    out += [
        DnsRecord(purpose=RecordPurpose.SPF, name=name, value=f"v=spf1 include:{spf_include} ~all"),
        DnsRecord(purpose=RecordPurpose.DMARC, name=f"_dmarc.{name}", value="v=DMARC1; p=none"),
        DnsRecord(purpose=RecordPurpose.OWNERSHIP, name=f"{OWNERSHIP_LABEL}.{name}",
                  value=ownership_token(domain)),
    ]
    return out


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def matches(record: DnsRecord, published: Sequence[str]) -> bool:
    """Whether one of the TXT strings published at record.name satisfies the record."""
    if record.purpose == RecordPurpose.DKIM:
        want = _tags(record.value)
        return any(_tags(t).get("p") == want["p"] and _tags(t).get("k", "rsa") == want["k"]
                   for t in published)
    if record.purpose == RecordPurpose.SPF:
        include = record.value.split()[1]
        return any(t.startswith("v=spf1") and include in t.split() for t in published)
    if record.purpose == RecordPurpose.DMARC:
        return any(t.replace(" ", "").upper().startswith("V=DMARC1") for t in published)
    return record.value in published


def verify(wanted: Sequence[DnsRecord], lookup: Mapping[str, Sequence[str]]) -> tuple[list[DnsRecord], str]:
    """Records with ``verified`` set from ``lookup`` (name → TXT strings) and a message naming the
    missing or wrong ones (empty when all are published)."""
    checked = [r.model_copy(update={"verified": matches(r, lookup.get(r.name, ()))}) for r in wanted]
    missing = [f"{r.purpose} TXT at {r.name}" + (" is missing" if not lookup.get(r.name)
                                                 else " does not match the expected value")
               for r in checked if not r.verified]
    return checked, "; ".join(missing)
