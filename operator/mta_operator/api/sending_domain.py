"""SendingDomain: a domain a Cluster may send from, with its DKIM key and the DNS records to publish."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from .base import (
    ApiModel,
    Conditions,
    CrdInfo,
    ImmutableClusterRef,
    ObservedGeneration,
    PrinterColumn,
    Resource,
    ready_columns,
    section,
)
from .rules import immutable
from .strings import DnsLabel, DnsName


class DkimAlgorithm(StrEnum):
    """DKIM signing algorithm."""

    RSA = "RSA"
    ED25519 = "Ed25519"


class Dkim(ApiModel):
    """DKIM signing. The key is generated once per domain and kept in a Secret."""

    enabled: bool = Field(True, description="Sign outgoing mail of this domain with DKIM.")
    selector: DnsLabel = Field("mta", description="DKIM selector: the key is published at "
                                                  "<selector>._domainkey.<domain>.")
    algorithm: DkimAlgorithm = Field(DkimAlgorithm.RSA, description="RSA (rsa-sha256, understood everywhere) "
                                                                    "or Ed25519 (ed25519-sha256, RFC 8463).")
    key_size: Literal[2048, 3072, 4096] = Field(2048, description="RSA key size in bits (unused by Ed25519).")


class SendingDomainSpec(ApiModel):
    """Desired state of a sending domain."""

    cluster_ref: ImmutableClusterRef
    domain: Annotated[DnsName, immutable("domain")] = Field(
        description="The domain mail is sent from (the part after @), lower case, such as example.com. "
                    "Immutable: create a new SendingDomain for another domain.")
    dkim: Dkim = section(Dkim, "DKIM signing.")


class RecordPurpose(StrEnum):
    """Why a DNS record is needed."""

    DKIM = "DKIM"
    SPF = "SPF"
    DMARC = "DMARC"
    OWNERSHIP = "Ownership"


class DnsRecord(ApiModel):
    """A DNS record to publish for the domain."""

    purpose: RecordPurpose = Field(description="DKIM, SPF, DMARC or Ownership.")
    type: Literal["TXT", "CNAME"] = Field("TXT", description="Record type.")
    name: str = Field(max_length=253, description="Fully qualified record name.")
    value: str = Field(max_length=4096, description="Record value (TXT text without quotes).")
    verified: bool = Field(False, description="Whether the last DNS check found this value published.")


class SendingDomainStatus(ApiModel):
    """Observed state of a sending domain."""

    observed_generation: ObservedGeneration
    conditions: Conditions
    dns_records: list[DnsRecord] = Field(default_factory=list, max_length=16,
                                         description="DNS records to publish for the domain.")
    dkim_secret_name: str = Field("", max_length=253, description="Secret holding the DKIM private key.")


class SendingDomain(Resource):
    """A domain a Cluster may send from."""

    crd = CrdInfo(
        kind="SendingDomain", plural="sendingdomains", short_name="sdomain",
        description="A domain an MTA Cluster may send from: DKIM key and the DNS records to publish.",
        columns=(
            PrinterColumn("Domain", ".spec.domain", "Sending domain"),
            PrinterColumn("Cluster", ".spec.clusterRef.name", "MTA Cluster"),
            PrinterColumn("Verified", '.status.conditions[?(@.type=="Verified")].status',
                          "DNS records found published"),
            *ready_columns(),
        ),
        selectable_fields=(".spec.clusterRef.name",),
    )

    spec: SendingDomainSpec = Field(description="Desired state.")
    status: SendingDomainStatus | None = Field(None, description="Observed state, written by the operator.")
