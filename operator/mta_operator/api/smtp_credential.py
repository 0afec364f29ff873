"""SmtpCredential: what one application may send through a Cluster, and how it authenticates."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from mta_relay.usernames import USERNAME_MAX, USERNAME_SPECIALS
from pydantic import Field

from .base import (
    ApiModel,
    Conditions,
    CrdInfo,
    ImmutableClusterRef,
    ObservedGeneration,
    PrinterColumn,
    Resource,
    SecretKeyRef,
    ready_columns,
)
from .rules import UNIQUE, Rule
from .strings import DnsName, Duration, IPOrCIDR, Username, parse_cidr

DEFAULT_GRACE_PERIOD = "24h"


class DomainsMode(StrEnum):
    """Which sender domains a credential may use."""

    SPECIFIC = "Specific"
    ALL_CLUSTER_DOMAINS = "AllClusterDomains"
    ANY_DOMAIN = "AnyDomain"


class DomainRestriction(ApiModel):
    """Sender domains the credential may use in MAIL FROM and the From/Sender headers."""

    rules = (
        Rule("self.mode != 'Specific' || (has(self.names) && size(self.names) > 0)",
             "domains.names must list at least one domain when domains.mode is Specific",
             lambda d: d.mode != DomainsMode.SPECIFIC or bool(d.names),
             field_path=".names", reason="FieldValueRequired"),
        Rule("self.mode == 'Specific' || !has(self.names) || size(self.names) == 0",
             "domains.names is only allowed when domains.mode is Specific",
             lambda d: d.mode == DomainsMode.SPECIFIC or not d.names,
             field_path=".names", reason="FieldValueForbidden"),
    )

    mode: DomainsMode = Field(
        DomainsMode.SPECIFIC,
        description="Specific: only the domains in names. AllClusterDomains: every SendingDomain of the "
                    "cluster, including ones added later. AnyDomain: any domain whose SPF record "
                    "authorises the cluster.")
    names: Annotated[list[DnsName], UNIQUE] = Field(
        default_factory=list, max_length=100,
        description="Lower-case domains (each a SendingDomain of the cluster) for mode Specific.")


class QuotaPeriod(StrEnum):
    """Period of a quota."""

    HOUR = "Hour"
    DAY = "Day"
    MONTH = "Month"


class Quota(ApiModel):
    """How many messages the credential may send per period; over it, SMTP answers 452 4.7.1."""

    messages: int = Field(ge=0, le=1_000_000_000, description="Messages per period; 0 = unlimited.")
    period: QuotaPeriod = Field(QuotaPeriod.DAY, description="UTC calendar periods: Hour, Day, or Month "
                                                             "(from the first of the month, 00:00 UTC).")


class Authentication(StrEnum):
    """How a client proves it may use the credential."""

    PASSWORD = "Password"  # noqa: S105 - the name of a mode, not a secret
    SOURCE_IP = "SourceIP"


class Rotation(ApiModel):
    """Replacing a generated password without downtime: the new one goes to the connection Secret, the
    previous one keeps working for the grace period. Each field is a request the operator answers once
    per value, so it can sit in Git (GitOps) as well as be set by `kubectl mta credential rotate`."""

    grace_period: Duration = Field(
        DEFAULT_GRACE_PERIOD,
        description="How long a replaced password keeps working after the rotation that replaced it (and "
                    "after a change of a passwordSecretRef Secret), such as 90m or 24h. Shortening it "
                    "shortens the grace of passwords already replaced.")
    requested_at: datetime | None = Field(
        None, description="Rotate the generated password: each new value (any RFC 3339 time, by convention "
                          "the time of the request) makes one new password. Generated passwords only: with "
                          "passwordSecretRef, change that Secret.")
    retire_requested_at: datetime | None = Field(
        None, description="Retire every replaced password now instead of at the end of its grace period: "
                          "each new value retires the passwords replaced before it was seen.")


def _rotation_allowed(spec: SmtpCredentialSpec) -> bool:
    return spec.rotation is None or spec.rotation.requested_at is None or (
        spec.authentication == Authentication.PASSWORD and spec.password_secret_ref is None)


def _not_open(spec: SmtpCredentialSpec) -> bool:
    nets = [parse_cidr(a) for a in spec.allowed_ips]
    return spec.authentication != Authentication.SOURCE_IP or all(n is None or n.prefixlen for n in nets)


class SmtpCredentialSpec(ApiModel):
    """Desired state of an SMTP credential."""

    rules = (
        Rule("self.authentication != 'SourceIP' || (has(self.allowedIPs) && size(self.allowedIPs) > 0)",
             "allowedIPs must list at least one address or CIDR when authentication is SourceIP",
             lambda s: s.authentication != Authentication.SOURCE_IP or bool(s.allowed_ips),
             field_path=".allowedIPs", reason="FieldValueRequired"),
        Rule("self.authentication != 'SourceIP' || !has(self.allowedIPs) || "
             "self.allowedIPs.all(a, !isCIDR(a) || cidr(a).prefixLength() != 0)",
             "allowedIPs may not contain 0.0.0.0/0 or ::/0 when authentication is SourceIP: "
             "that would make an open relay",
             _not_open, field_path=".allowedIPs", reason="FieldValueForbidden"),
        Rule("self.authentication == 'Password' || !has(self.passwordSecretRef)",
             "passwordSecretRef is only allowed when authentication is Password",
             lambda s: s.authentication == Authentication.PASSWORD or s.password_secret_ref is None,
             field_path=".passwordSecretRef", reason="FieldValueForbidden"),
        Rule("self.authentication == 'Password' || !has(self.cramMd5) || !self.cramMd5",
             "cramMd5 is only allowed when authentication is Password",
             lambda s: s.authentication == Authentication.PASSWORD or not s.cram_md5,
             field_path=".cramMd5", reason="FieldValueForbidden"),
        Rule("!has(self.rotation) || !has(self.rotation.requestedAt) || "
             "(self.authentication == 'Password' && !has(self.passwordSecretRef))",
             "rotation.requestedAt is only for generated passwords: with passwordSecretRef, rotate by "
             "changing that Secret (the previous password keeps working for rotation.gracePeriod)",
             _rotation_allowed, field_path=".rotation.requestedAt", reason="FieldValueForbidden"),
    )

    cluster_ref: ImmutableClusterRef
    username: Username | None = Field(
        None, description=f"SMTP/HTTP username: 1-{USERNAME_MAX} letters, digits and {USERNAME_SPECIALS} ; "
                          "unique within the cluster. Default: metadata.name. Immutable.")
    description: str | None = Field(None, max_length=1024, description="What the credential is for.")
    domains: DomainRestriction = Field(
        description="Sender domains the credential may use in MAIL FROM and the From/Sender headers.")
    allowed_ips: Annotated[list[IPOrCIDR], UNIQUE] = Field(
        default_factory=list, max_length=64, alias="allowedIPs",
        description="Source addresses the credential may connect from: IPv4 or IPv6 addresses and CIDRs "
                    "(network address, no host bits), such as 192.0.2.10, 10.0.0.0/8, 2001:db8::/32, ::1. "
                    "Empty: any address. Required with authentication SourceIP, where 0.0.0.0/0 and ::/0 "
                    "are refused. A connection from elsewhere gets 535 5.7.8 IP not authorized.")
    quota: Quota | None = Field(None, description="Messages per period; unset: unlimited.")
    authentication: Authentication = Field(
        Authentication.PASSWORD,
        description="Password: AUTH with username and password. SourceIP: no password; a connection from "
                    "allowedIPs may send without AUTH.")
    password_secret_ref: SecretKeyRef | None = Field(
        None, description="Bring your own password: a key of a Secret in this namespace. Unset: the "
                          "operator generates a 32-character password.")
    allow_sender_header: bool = Field(
        False, description="Accept a message whose From header domain is not allowed when its Sender "
                           "header domain is (sending on behalf of someone else).")
    allow_null_sender: bool = Field(
        False, description="Accept the null sender MAIL FROM:<> (bounces and delivery reports, e.g. from a "
                           "Postfix relaying through the cluster). Such mail never gets a bounce back; its "
                           "From header must still be in an allowed domain.")
    cram_md5: bool = Field(
        False, description="Also accept AUTH CRAM-MD5 (for clients that cannot do anything else). The relay "
                           "then keeps the password itself, not only a one-way hash, in the Cluster's "
                           "credential table Secrets. Needs CRAM-MD5 in the Cluster's "
                           "spec.smtp.authMechanisms; otherwise the credential is served without it and "
                           "its Ready condition says so (CramMd5NotOffered).")
    suspended: bool = Field(
        False, description="Switch the credential off without deleting it: every MTA refuses it (AUTH, HTTP "
                           "Basic, and MAIL for SourceIP) with 525 5.7.13 within seconds; its connection "
                           "Secret and passwords are kept, so false turns it back on as it was.")
    bypass_suppression_list: bool = Field(
        False, description="Send to recipients on the Cluster's suppression list all the same. For mail that "
                           "must always be attempted, such as password resets and other transactional mail "
                           "a person asked for. The credential's own hard bounces still add their "
                           "recipients to the list, which the other credentials then respect.")
    rotation: Rotation | None = Field(
        None, description="Password rotation without downtime: a new generated password on request, and how "
                          "long a replaced one keeps working.")


class CredentialUsage(ApiModel):
    """What the MTAs accepted with the credential, summed over all of them (asked every few seconds)."""

    sent: int = Field(ge=0, description="Messages accepted in the current quota period (a UTC day when "
                                        "there is no quota), over all the cluster's MTAs.")
    period_start: datetime = Field(description="Start of the current period (UTC).")
    remaining: int | None = Field(None, ge=0, description="Messages left in the period; only with a quota.")
    last_used_time: datetime | None = Field(None, description="When a message was last accepted with it.")
    last_used_from: str | None = Field(None, max_length=64,
                                       description="The client address of that last message.")


class PasswordStatus(ApiModel):
    """One password the credential accepts (no secret material: times only)."""

    created: datetime | None = Field(None, description="When it was made (or first seen, for "
                                                       "passwordSecretRef); unset when not known.")
    expires: datetime | None = Field(None, description="When the MTAs stop accepting it; unset for the "
                                                       "newest password, which does not expire.")


class SmtpCredentialStatus(ApiModel):
    """Observed state of an SMTP credential."""

    observed_generation: ObservedGeneration
    conditions: Conditions
    username: str = Field("", max_length=255, description="The username in effect (spec.username or "
                                                          "metadata.name).")
    summary: str = Field("", max_length=256, description="What the credential allows, such as "
                                                         "'All domains, all IPs' or '2 domains, 3 IPs'.")
    connection_secret_name: str = Field(
        "", max_length=253,
        description="Secret with username, password, host and port that applications mount.")
    usage: CredentialUsage | None = Field(None, description="Messages sent and the last use, as the MTAs "
                                                            "report them; unset until the first report.")
    passwords: list[PasswordStatus] = Field(
        default_factory=list, max_length=8,
        description="The passwords the MTAs accept, newest first: during a rotation's grace period also the "
                    "replaced ones, each with its expiry. Empty for SourceIP.")


# The effective username is spec.username or metadata.name; comparing it (not the optional field) also
# catches adding, removing or changing spec.username after creation. Root rules may read metadata.name.
_EFFECTIVE = "(has({o}.spec.username) ? {o}.spec.username : {o}.metadata.name)"
USERNAME_IMMUTABLE = Rule(
    f"{_EFFECTIVE.format(o='self')} == {_EFFECTIVE.format(o='oldSelf')}",
    "spec.username is immutable (it defaults to metadata.name): create a new SmtpCredential instead",
    field_path=".spec.username", reason="FieldValueForbidden")


class SmtpCredential(Resource):
    """Credentials an application sends with, and what they allow."""

    crd = CrdInfo(
        kind="SmtpCredential", plural="smtpcredentials", short_name="smtpcred",
        description="SMTP/HTTP submission credentials for one application of an MTA Cluster, with the "
                    "sender domains, source IPs and quota they allow.",
        columns=(
            PrinterColumn("Username", ".status.username", "Username in effect"),
            PrinterColumn("Cluster", ".spec.clusterRef.name", "MTA Cluster"),
            PrinterColumn("Summary", ".status.summary", "Allowed domains and IPs"),
            PrinterColumn("Sent", ".status.usage.sent", "Messages sent in the quota period", type="integer"),
            PrinterColumn("Last Used", ".status.usage.lastUsedTime", "Last message sent", type="date"),
            *ready_columns()[:1],
            PrinterColumn("Auth", ".spec.authentication", "Password or SourceIP", priority=1),
            PrinterColumn("Suspended", ".spec.suspended", "Refused by every MTA while true", type="boolean",
                          priority=1),
            PrinterColumn("Secret", ".status.connectionSecretName", "Connection Secret", priority=1),
            *ready_columns()[1:],
        ),
        root_rules=(USERNAME_IMMUTABLE,),
        selectable_fields=(".spec.clusterRef.name",),
    )

    spec: SmtpCredentialSpec = Field(description="Desired state.")
    status: SmtpCredentialStatus | None = Field(None, description="Observed state, written by the operator.")

    @property
    def effective_username(self) -> str:
        """spec.username, defaulting to metadata.name (a CRD default cannot read metadata)."""
        return self.spec.username or self.metadata.name
