"""Cluster: a dedicated MTA cluster (the relay pods, their Services, TLS and delivery settings)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from mta_relay.events.classify import CATEGORIES
from mta_relay.events.record import EventType
from mta_relay.workers.count import MAX_WORKERS
from pydantic import AfterValidator, Field, WithJsonSchema

from .base import (
    ApiModel,
    Conditions,
    CrdInfo,
    ObservedGeneration,
    PrinterColumn,
    Resource,
    SecretRef,
    ready_columns,
    section,
)
from .rules import UNIQUE, Rule, immutable
from .strings import (
    DNS_LABEL_RE,
    DNS_NAME_RE,
    DnsLabel,
    DnsName,
    Duration,
    Quantity,
    Username,
    duration_seconds,
    is_dns_label,
    is_dns_name,
    is_https_url,
    is_ip,
)

Port = Annotated[int, Field(ge=1, le=65535)]


class AuthMechanism(StrEnum):
    """A SASL mechanism offered after STARTTLS."""

    PLAIN = "PLAIN"
    LOGIN = "LOGIN"
    CRAM_MD5 = "CRAM-MD5"


# The relay listens on 10000 + the public port (unprivileged), and the Service's https port is 8443.
SmtpPort = Annotated[int, Field(ge=1, le=55535), Rule(
    "self != 8443", "8443 is the Service's HTTPS port; choose another SMTP port", lambda p: p != 8443)]


class SmtpSettings(ApiModel):
    """SMTP submission."""

    rules = (Rule("!has(self.implicitTlsPorts) || !has(self.ports) || "
                  "self.implicitTlsPorts.all(p, !(p in self.ports))",
                  "smtp.implicitTlsPorts and smtp.ports must not share a port",
                  lambda s: not set(s.implicit_tls_ports) & set(s.ports), field_path=".implicitTlsPorts"),)

    ports: Annotated[list[SmtpPort], UNIQUE] = Field(
        default_factory=lambda: [25, 587, 2587], min_length=1, max_length=8,
        json_schema_extra={"default": [25, 587, 2587]},
        description="Ports the Service offers SMTP on (STARTTLS required on every one), 1-55535 except "
                    "8443. The container listens on 10000 + each; the Service maps these onto them.")
    implicit_tls_ports: Annotated[list[SmtpPort], UNIQUE] = Field(
        default_factory=list, max_length=4,
        description="Ports with TLS from the first byte (RFC 8314 submissions, 465 by convention), with the "
                    "same policy as the STARTTLS ports; 1-55535 except 8443, none of spec.smtp.ports.")
    workers: int | None = Field(
        None, ge=1, le=MAX_WORKERS,
        description="SMTP serving processes per MTA, sharing its ports and spool (1-8). Unset: one per CPU "
                    "of the relay container's CPU limit (spec.pod.resources.limits.cpu, rounded up), or per "
                    "CPU of the node without a limit. A change restarts the MTAs one at a time.")
    trace_client_address: bool = Field(
        True, description="Whether the Received header the MTAs add names the client's address and EHLO "
                          "name. false: only the credential and the MTA (for senders' privacy).")
    max_message_size: int = Field(
        26214400, ge=1024, le=1073741824,
        description="Largest message accepted, in bytes (advertised as SIZE); default 25 MiB.")
    auth_mechanisms: Annotated[list[AuthMechanism], UNIQUE, Rule(
        "self.exists(m, m != 'CRAM-MD5')",
        "authMechanisms must offer PLAIN or LOGIN: CRAM-MD5 works only for credentials that opt in",
        lambda ms: any(m != AuthMechanism.CRAM_MD5 for m in ms))] = Field(
        default_factory=lambda: [AuthMechanism.PLAIN, AuthMechanism.LOGIN], min_length=1, max_length=3,
        json_schema_extra={"default": ["PLAIN", "LOGIN"]},
        description="SASL mechanisms offered to every credential. CRAM-MD5 is offered only to "
                    "credentials that also opt in (SmtpCredential spec.cramMd5): it needs the relay to keep "
                    "the password itself instead of a one-way hash. At least PLAIN or LOGIN.")


class HttpSettings(ApiModel):
    """HTTP submission (POST /api/inject/v1 with Basic auth)."""

    enabled: bool = Field(True, description="Serve the HTTP submission API next to SMTP.")


class IssuerKind(StrEnum):
    """Kind of a cert-manager issuer."""

    ISSUER = "Issuer"
    CLUSTER_ISSUER = "ClusterIssuer"


class IssuerRef(ApiModel):
    """A cert-manager issuer."""

    name: str = Field(min_length=1, max_length=253, description="Name of the issuer.")
    kind: IssuerKind = Field(IssuerKind.ISSUER, description="Issuer (in this namespace) or ClusterIssuer.")
    group: str = Field("cert-manager.io", max_length=253, description="API group of the issuer.")


class TlsSettings(ApiModel):
    """Where the SMTP/HTTP server certificate comes from; neither field set: an operator-managed CA."""

    rules = (Rule("!(has(self.secretName) && has(self.issuerRef))",
                  "tls: set secretName or issuerRef, not both",
                  lambda s: s.secret_name is None or s.issuer_ref is None),)

    secret_name: str | None = Field(
        None, min_length=1, max_length=253,
        description="A kubernetes.io/tls Secret in this namespace with the certificate for spec.hostname.")
    issuer_ref: IssuerRef | None = Field(
        None, description="A cert-manager issuer the operator requests a Certificate for spec.hostname from.")


class RatePeriod(StrEnum):
    """Period of a rate limit."""

    SECOND = "Second"
    MINUTE = "Minute"
    HOUR = "Hour"
    DAY = "Day"


class RateLimit(ApiModel):
    """Outgoing rate per MTA. Over the limit, mail waits in the queue; it is never refused."""

    messages: int = Field(ge=1, le=1_000_000_000, description="Messages each MTA delivers per period.")
    period: RatePeriod = Field(RatePeriod.MINUTE, description="Second, Minute, Hour or Day.")


class DeliveryMode(StrEnum):
    """How mail leaves the cluster."""

    MX = "MX"
    SMARTHOST = "Smarthost"


class SmarthostTls(StrEnum):
    """TLS towards the smarthost."""

    REQUIRED = "Required"
    IMPLICIT = "Implicit"
    OPPORTUNISTIC = "Opportunistic"


def _host(value: str) -> bool:
    return is_dns_name(value) or is_ip(value)


class Smarthost(ApiModel):
    """The relay every message is handed to when delivery.mode is Smarthost."""

    host: Annotated[str, Rule(f"isIP(self) || self.matches('{DNS_NAME_RE}')",
                              "host must be a lower-case DNS name or an IP address", _host)] = Field(
        min_length=1, max_length=253, description="DNS name or IP address of the smarthost.")
    port: int = Field(587, ge=1, le=65535, description="Port of the smarthost.")
    tls: SmarthostTls = Field(
        SmarthostTls.REQUIRED,
        description="Required: STARTTLS with a verified certificate; Implicit: TLS from the first byte "
                    "(port 465), verified; Opportunistic: STARTTLS when offered, certificate not verified, "
                    "plaintext when not offered (not recommended).")
    credentials_secret_ref: SecretRef | None = Field(
        None, description="A Secret with keys username and password for AUTH at the smarthost.")


class TlsPolicy(StrEnum):
    """The TLS policy towards next hops chosen by MX look-up (docs/delivery.md, "Outbound TLS policy")."""

    AUTO = "Auto"
    MTA_STS = "MtaSts"
    DANE = "Dane"
    OPPORTUNISTIC = "Opportunistic"
    REQUIRED = "Required"
    NONE = "None"


IpAddress = Annotated[str, Field(min_length=1, max_length=45),
                      Rule("isIP(self)", "must be an IPv4 or IPv6 address", is_ip)]


class DnssecResolver(ApiModel):
    """A DNSSEC-validating resolver whose answers' AD bit the MTAs trust for DANE."""

    nameservers: Annotated[list[IpAddress], UNIQUE] = Field(
        min_length=1, max_length=3,
        description="Addresses of the validating resolver: on the pod's loopback (a sidecar) or inside the "
                    "cluster network, never across the Internet (the path to it carries no signatures).")
    port: int = Field(53, ge=1, le=65535, description="Its port.")


class ShapingPeriod(StrEnum):
    """Period of a destination's rate."""

    SECOND = "Second"
    MINUTE = "Minute"
    HOUR = "Hour"


class ShapingRate(ApiModel):
    """Transactions started per period, counted over a sliding window."""

    messages: int = Field(ge=1, le=1_000_000, description="Messages each MTA starts per period.")
    period: ShapingPeriod = Field(ShapingPeriod.MINUTE, description="Second, Minute or Hour.")


class ShapingLimits(ApiModel):
    """What one destination may take from each MTA. Unset: the default's value (see docs/delivery.md)."""

    max_connections: int | None = Field(
        None, ge=1, le=1000, description="Transactions at once from one MTA to the destination.")
    messages_per_connection: int | None = Field(
        None, ge=1, le=100_000, description="Messages on one connection before it is closed and a new one "
                                            "opened.")
    rate: ShapingRate | None = Field(None, description="At most this many messages per period; over it, "
                                                       "mail waits in the queue.")
    connect_timeout: Duration | None = Field(
        None, description="Connect, greeting, EHLO, STARTTLS and AUTH, such as 30s.")
    transaction_timeout: Duration | None = Field(
        None, description="One transaction, MAIL FROM to the reply after the final dot, such as 10m.")


MX_HOST_RE = r"^[.]?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+$"


def _mx_host(value: str) -> bool:
    return is_dns_name(value[1:] if value.startswith(".") else value)


MxHost = Annotated[str, Field(min_length=2, max_length=253), Rule(
    f"self.matches('{MX_HOST_RE}')",
    "must be an MX host name (aspmx.l.google.com) or a suffix with a leading dot (.google.com)", _mx_host)]


class ShapingRule(ShapingLimits):
    """Limits for the destinations a rule matches: recipient domains, or MX host names."""

    rules = (Rule("(has(self.domains) && size(self.domains) > 0) || "
                  "(has(self.mxHosts) && size(self.mxHosts) > 0)",
                  "a shaping rule needs domains or mxHosts", lambda r: bool(r.domains or r.mx_hosts)),)

    name: DnsLabel = Field(description="Name of the rule (logs, metrics).")
    domains: Annotated[list[DnsName], UNIQUE] = Field(
        default_factory=list, max_length=50, description="Recipient domains (exact) the rule is for.")
    mx_hosts: Annotated[list[MxHost], UNIQUE] = Field(
        default_factory=list, max_length=32,
        description="MX host names the rule is for: exact (aspmx.l.google.com), or every host under a suffix "
                    "written with a leading dot (.google.com). Every domain whose MX hosts match shares "
                    "the rule's counters (all Google Workspace domains count as Gmail).")


class ThrottleSuspension(ApiModel):
    """How long a destination that answers a throttle reply (421, or 4.7.x) is left alone."""

    # has(): the API server checks the schema default {} against this rule before filling in the fields.
    rules = (Rule("!has(self.first) || !has(self.max) || duration(self.first) <= duration(self.max)",
                  "shaping.throttleSuspension.first must not be longer than max",
                  lambda t: duration_seconds(t.first) <= duration_seconds(t.max), field_path=".first"),)

    first: Duration = Field("1m", description="The first suspension; it doubles on each repeat.")
    max: Duration = Field("1h", description="The longest suspension.")


class Shaping(ApiModel):
    """Per-destination shaping: the rules, then the built-in table of large providers, then the default."""

    builtin_table: bool = Field(
        True, description="Use the built-in table for Gmail, Microsoft, Yahoo, Apple and other large "
                          "providers (docs/delivery.md lists it); your rules go over it.")
    default: ShapingLimits = section(ShapingLimits, "Limits of a destination no rule matches, and of every "
                                                    "limit a rule leaves unset.")
    # "rules" on the wire; ApiModel.rules is the class's CEL, hence the Python name.
    shaping_rules: Annotated[list[ShapingRule], Rule(
        "self.all(r, self.exists_one(x, x.name == r.name))", "shaping.rules: names must be unique",
        lambda rules: len({r.name for r in rules}) == len(rules))] = Field(
        default_factory=list, max_length=64, alias="rules",
        description="Rules by recipient domain or MX host.")
    throttle_suspension: ThrottleSuspension = section(
        ThrottleSuspension, "How long a destination answering 421 or 4.7.x is left alone.")


class Route(ApiModel):
    """Mail of some recipient or sender domains goes to its own next hops."""

    rules = (
        Rule("(has(self.recipientDomains) && size(self.recipientDomains) > 0) || "
             "(has(self.senderDomains) && size(self.senderDomains) > 0)",
             "a route needs recipientDomains or senderDomains",
             lambda r: bool(r.recipient_domains or r.sender_domains)),
        Rule("(has(self.smarthosts) && size(self.smarthosts) > 0) == "
             "(!has(self.mode) || self.mode == 'Smarthost')",
             "route.smarthosts is required when the route's mode is Smarthost and not allowed otherwise",
             lambda r: (r.mode == DeliveryMode.SMARTHOST) == bool(r.smarthosts), field_path=".smarthosts"),
    )

    name: DnsLabel = Field(description="Name of the route (conditions, logs).")
    recipient_domains: Annotated[list[DnsName], UNIQUE] = Field(
        default_factory=list, max_length=100, description="Recipient domains (exact) this route is for.")
    sender_domains: Annotated[list[DnsName], UNIQUE] = Field(
        default_factory=list, max_length=100,
        description="Sender (MAIL FROM) domains this route is for; a recipient domain route goes first.")
    mode: DeliveryMode = Field(DeliveryMode.SMARTHOST, description="Smarthost or MX.")
    smarthosts: list[Smarthost] = Field(
        default_factory=list, max_length=8,
        description="Tried in order: the next one when one cannot be reached or refuses the session (4xx "
                    "or 5xx at the greeting, EHLO, STARTTLS or AUTH).")


class Delivery(ApiModel):
    """Onward delivery."""

    # has(self.mode): the API server checks the schema default {} against these rules before filling in mode.
    rules = (Rule("has(self.smarthost) == (has(self.mode) && self.mode == 'Smarthost')",
                  "delivery.smarthost is required when delivery.mode is Smarthost and not allowed otherwise",
                  lambda d: (d.mode == DeliveryMode.SMARTHOST) == (d.smarthost is not None),
                  field_path=".smarthost"),
             Rule("!has(self.tlsPolicy) || self.tlsPolicy != 'Dane' || has(self.dnssecResolver)",
                  "delivery.tlsPolicy Dane needs delivery.dnssecResolver",
                  lambda d: d.tls_policy != TlsPolicy.DANE or d.dnssec_resolver is not None,
                  field_path=".dnssecResolver"),
             Rule("!has(self.routes) || self.routes.all(r, self.routes.exists_one(x, x.name == r.name))",
                  "delivery.routes: names must be unique",
                  lambda d: len({r.name for r in d.routes}) == len(d.routes), field_path=".routes"))

    mode: DeliveryMode = Field(
        DeliveryMode.MX,
        description="The default route: MX looks up each recipient domain's MX records; Smarthost hands "
                    "mail to one relay.")
    smarthost: Smarthost | None = Field(None, description="The smarthost (mode Smarthost only).")
    tls_policy: TlsPolicy = Field(
        TlsPolicy.AUTO,
        description="TLS towards MX hosts (mode MX). Auto: DANE where the TLSA records are DNSSEC-validated "
                    "(needs dnssecResolver), else the domain's MTA-STS policy, else opportunistic STARTTLS; "
                    "MtaSts or Dane: only that mechanism, else opportunistic; Opportunistic: STARTTLS when "
                    "offered, unverified; Required: DANE where validated, else STARTTLS with a certificate "
                    "valid for the MX host name, or no delivery; None: no STARTTLS.")
    dnssec_resolver: DnssecResolver | None = Field(
        None, description="The DNSSEC-validating resolver whose AD bit the MTAs trust; without it DANE is "
                          "not used.")
    # The CEL cost budget bounds routes x domains (each domain is checked by a rule): 16 x 100.
    routes: list[Route] = Field(
        default_factory=list, max_length=16,
        description="Routes by recipient domain, then by sender domain; mail no route takes goes by mode.")
    shaping: Shaping = section(Shaping, "Per-destination limits, the built-in provider table, throttle "
                                        "suspensions.")


class AccessMode(StrEnum):
    """Access mode of the spool volumes."""

    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"


class QueueStorage(ApiModel):
    """The spool volume of each MTA: a PersistentVolumeClaim per MTA that outlives its pod."""

    rules = (
        Rule("!has(self.ephemeral) || !self.ephemeral || !has(self.storageClassName)",
             "queue.storage: storageClassName and ephemeral: true exclude each other",
             lambda s: not s.ephemeral or s.storage_class_name is None),
        immutable("queue.storage (the MTAs' volumes are made from it; to grow a spool, expand each "
                  "PersistentVolumeClaim spool-CLUSTER-mta-N)"),
    )

    size: Quantity = Field("1Gi", description="Size of each MTA's spool volume, such as 1Gi.")
    storage_class_name: str | None = Field(
        None, min_length=1, max_length=253,
        description="StorageClass of the spool volumes; unset: the cluster's default StorageClass.")
    access_modes: Annotated[list[AccessMode], UNIQUE] = Field(
        default_factory=lambda: [AccessMode.READ_WRITE_ONCE], min_length=1, max_length=2,
        json_schema_extra={"default": ["ReadWriteOnce"]},
        description="Access modes of the spool volumes (each is used by one MTA pod at a time).")
    ephemeral: bool = Field(
        False, description="true: an emptyDir instead of a volume. Queued mail is then lost with the pod "
                           "(rollouts, drains, evictions); the Cluster says so in its SpoolPersistent "
                           "condition. For tests and throw-away clusters only.")


class Queue(ApiModel):
    """The durable queue."""

    rules = (Rule("!has(self.minRetryInterval) || !has(self.maxRetryInterval) || "
                  "duration(self.minRetryInterval) <= duration(self.maxRetryInterval)",
                  "queue.minRetryInterval must not be longer than queue.maxRetryInterval",
                  lambda q: duration_seconds(q.min_retry_interval) <= duration_seconds(q.max_retry_interval),
                  field_path=".minRetryInterval"),)

    storage: QueueStorage = section(QueueStorage, "The spool volume of each MTA.")
    max_retry_age: Duration = Field("120h", description="How long a message is retried before it bounces, "
                                                        "such as 120h (the RFC 5321 suggestion: 4-5 days).")
    min_retry_interval: Duration = Field(
        "5m", description="Wait after the first failed attempt; it doubles at each failure (with jitter) "
                          "up to maxRetryInterval. Postfix's minimal_backoff_time.")
    max_retry_interval: Duration = Field(
        "1h", description="Longest wait between two attempts. Postfix's maximal_backoff_time.")
    handoff_timeout: Duration = Field(
        "15m", description="On scale-down, how long the MTAs that go may take to hand their queue to the "
                           "MTAs that stay. Past it they are removed all the same and their volumes are "
                           "kept, with the mail on them (see the QueueHandedOff condition). An ephemeral "
                           "spool cannot be kept: its MTAs are removed only once empty.")


HTTPS_URL_RULE = Rule("isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != '' "
                      "&& !self.matches('[@# ]')",
                      "url must be an https:// URL with a host and no user@ or #fragment, such as "
                      "https://hooks.example.com/mta", is_https_url)


class WebhookSecretRef(ApiModel):
    """A key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret in this namespace.")
    key: str = Field("secret", min_length=1, max_length=253, description="Key in the Secret's data.")


class Webhook(ApiModel):
    """Where an MTA posts its delivery events: batches signed per the Standard Webhooks specification,
    retried with backoff until the receiver answers 2xx."""

    name: Annotated[str, Rule(f"self.matches('{DNS_LABEL_RE}')",
                              "name must be a DNS label: lower-case letters, digits and '-'",
                              is_dns_label)] = Field(min_length=1, max_length=40,
                                                      description="Name of the webhook (metrics, status).")
    url: Annotated[str, HTTPS_URL_RULE] = Field(
        min_length=9, max_length=2048,
        description="https:// URL the events are posted to. The receiver's certificate is verified against "
                    "the MTA image's trust store.")
    secret_ref: WebhookSecretRef = Field(
        description="The Standard Webhooks signing secret (whsec_ followed by base64), a key of a Secret "
                    "in this namespace.")
    types: Annotated[list[EventType], UNIQUE] = Field(
        default_factory=list, max_length=len(EventType),
        description="Event types to send; empty: all of them.")
    credentials: Annotated[list[Username], UNIQUE] = Field(
        default_factory=list, max_length=256,
        description="Usernames of the SmtpCredentials whose events to send; empty: every credential's.")


class Events(ApiModel):
    """Delivery events: one per recipient and step (Reception, Delivery, TransientFailure, Bounce,
    Expiration, Rejection, ...), always written as a JSON log line, kept on each MTA's volume for
    `kubectl mta messages`, and posted to the webhooks."""

    rules = (Rule("!has(self.webhooks) || "
                  "self.webhooks.all(w, self.webhooks.exists_one(x, x.name == w.name))",
                  "events.webhooks: names must be unique",
                  lambda e: len({w.name for w in e.webhooks}) == len(e.webhooks), field_path=".webhooks"),)

    retention: Duration = Field("168h", description="How long each MTA keeps its events queryable.")
    max_stored_events: int = Field(
        5_000_000, ge=10_000, le=100_000_000,
        description="Most events each MTA keeps (the oldest go first, before their retention ends).")
    max_pending_events: int = Field(
        1_000_000, ge=1_000, le=10_000_000,
        description="Most events each MTA holds for one webhook whose receiver does not answer; past it the "
                    "oldest are dropped and counted (mta_webhook_events_dropped_total and the Cluster's "
                    "status.events). Mail is never slowed down by a webhook.")
    credential_metrics: bool = Field(
        False, description="Label the per-credential delivery metrics with the credential's username (one "
                           "series per credential and outcome; leave off with very many credentials).")
    webhooks: list[Webhook] = Field(default_factory=list, max_length=8, description="Event receivers.")


def _known_class(value: str) -> str:
    if value not in CATEGORIES:
        raise ValueError(f"unknown bounce class {value!r}; one of {', '.join(sorted(CATEGORIES))}")
    return value


# The relay's bounce classes (mta_relay.events.classify owns them): an enum in the schema, so the API server
# refuses a typo and names the field.
BounceClass = Annotated[str, AfterValidator(_known_class),
                        WithJsonSchema({"type": "string", "enum": sorted(CATEGORIES)})]
MIN_EXPIRE_SECONDS = 60  # the relay purges expired entries once a minute


class Suppression(ApiModel):
    """The Cluster's suppression list: recipients every MTA refuses at RCPT (550 5.7.1), because mail to
    them bounced for good or a person put them there (`kubectl mta suppressions`). One list per Cluster,
    kept on every MTA's volume and copied between the MTAs within seconds."""

    enabled: bool = Field(
        True, description="Whether the list is in force. false: no bounce adds an entry and no entry "
                          "refuses a recipient; the entries are kept and refuse again once it is back on.")
    classes: Annotated[list[BounceClass], UNIQUE] = Field(
        default_factory=lambda: ["InvalidRecipient"], max_length=len(CATEGORIES),
        json_schema_extra={"default": ["InvalidRecipient"]},
        description="Bounce classes whose hard (permanent, 5xx) bounces add the recipient, as in the Bounce "
                    "events' bounce_classification: InvalidRecipient (no such mailbox, the default), "
                    "InactiveMailbox, BadDomain, ... Soft bounces never add one. Empty: none.")
    expire_after: Annotated[Duration, Rule(
        "duration(self) >= duration('60s')", "expireAfter must be at least 60s",
        lambda d: duration_seconds(d) >= MIN_EXPIRE_SECONDS)] | None = Field(
        None, description="How long an entry a bounce adds stays on the list, such as 720h (30 days), at "
                          "least 60s; the address is tried again after it. Unset: until someone removes it. "
                          "Entries added by hand or imported carry their own expiry.")


class ServiceType(StrEnum):
    """Type of the client Service."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class TrafficPolicy(StrEnum):
    """externalTrafficPolicy of the Service."""

    CLUSTER = "Cluster"
    LOCAL = "Local"


class ServiceSettings(ApiModel):
    """The Service clients connect to."""

    rules = (Rule("!has(self.externalTrafficPolicy) || self.type != 'ClusterIP'",
                  "service.externalTrafficPolicy needs service.type NodePort or LoadBalancer",
                  lambda s: s.type != ServiceType.CLUSTER_IP or s.external_traffic_policy is None,
                  field_path=".externalTrafficPolicy"),)

    type: ServiceType = Field(ServiceType.CLUSTER_IP, description="ClusterIP, NodePort or LoadBalancer.")
    annotations: dict[str, str] = Field(
        default_factory=dict, max_length=64,
        description="Annotations for the Service (load balancer settings, external-dns hostname).")
    external_traffic_policy: TrafficPolicy | None = Field(
        None, description="Local keeps the client's source IP, which allowedIPs checks rely on behind a "
                          "NodePort or LoadBalancer.")


IntOrString = int | str


class Resources(ApiModel):
    """Compute resources of the relay container, as in a Pod."""

    requests: dict[str, IntOrString] = Field(default_factory=dict, max_length=8,
                                             description="Minimum resources, such as cpu: 100m.")
    limits: dict[str, IntOrString] = Field(default_factory=dict, max_length=8,
                                           description="Maximum resources, such as memory: 256Mi.")


class Toleration(ApiModel):
    """A Pod toleration."""

    key: str | None = Field(None, max_length=316, description="Taint key; empty with Exists: every taint.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: str | None = Field(None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty: all effects.")
    toleration_seconds: int | None = Field(None, description="For NoExecute: how long the pod stays bound.")


class PodSettings(ApiModel):
    """Scheduling and resources of the MTA pods."""

    resources: Resources = section(Resources, "Compute resources of the relay container.")
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32,
                                          description="Node labels the MTA pods must run on.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32,
                                          description="Tolerations of the MTA pods.")


def _no_smarthost_is_hostname(spec: ClusterSpec) -> bool:
    hosts = [spec.delivery.smarthost] if spec.delivery.smarthost else []
    hosts += [s for r in spec.delivery.routes for s in r.smarthosts]
    return all(h.host != spec.hostname for h in hosts)


class ClusterSpec(ApiModel):
    """Desired state of an MTA cluster."""

    # The Service names the API server cannot know here (they need metadata): the operator checks those.
    rules = (Rule("(!has(self.delivery.smarthost) || self.delivery.smarthost.host != self.hostname) && "
                  "(!has(self.delivery.routes) || self.delivery.routes.all(r, !has(r.smarthosts) || "
                  "r.smarthosts.all(s, s.host != self.hostname)))",
                  "a smarthost may not be the cluster itself (spec.hostname): mail would loop",
                  _no_smarthost_is_hostname, field_path=".delivery"),)

    hostname: DnsName = Field(description="Public name of the cluster: SMTP greeting, EHLO name and TLS "
                                          "certificate name, such as smtp.example.com.")
    mtas: int = Field(2, ge=1, le=100, description="Number of MTA pods (replicas).")
    smtp: SmtpSettings = section(SmtpSettings, "SMTP submission.")
    http: HttpSettings = section(HttpSettings, "HTTP submission API.")
    tls: TlsSettings = section(TlsSettings, "TLS certificate source.")
    rate_limit: RateLimit | None = Field(None, description="Outgoing rate per MTA; unset: unlimited.")
    delivery: Delivery = section(Delivery, "Onward delivery.")
    queue: Queue = section(Queue, "The durable queue.")
    events: Events = section(Events, "Delivery events: logs, the MTAs' local store, webhooks.")
    suppression: Suppression = section(
        Suppression, "Recipients the MTAs refuse because their mail bounced for good (or a person said so).")
    service: ServiceSettings = section(ServiceSettings, "The client Service.")
    pod: PodSettings = section(PodSettings, "Pod settings of the MTAs.")


class MtaCounts(ApiModel):
    """MTA pods desired and ready."""

    desired: int = Field(0, ge=0, description="MTA pods wanted (spec.mtas).")
    ready: int = Field(0, ge=0, description="MTA pods ready (serving and in the Service's endpoints).")
    summary: str = Field("", max_length=32, description="ready/desired, such as 2/3 (the MTAs column).")


class Connection(ApiModel):
    """Where applications connect."""

    smtp_host: str = Field("", max_length=253, description="Host name of the SMTP Service.")
    smtp_ports: list[int] = Field(default_factory=list, max_length=8, description="SMTP ports (STARTTLS).")
    implicit_tls_ports: list[int] = Field(default_factory=list, max_length=4,
                                          description="SMTP ports with implicit TLS (smtps).")
    http_endpoint: str = Field("", max_length=512, description="URL of the HTTP submission API (empty: off).")


class RetainedVolume(ApiModel):
    """A spool volume kept after its MTA was removed with mail still on it."""

    claim: str = Field(max_length=253, description="The PersistentVolumeClaim.")
    messages: int | None = Field(None, ge=0, description="Messages on it when its MTA was removed (unset: "
                                                         "the MTA did not answer).")


class Handoff(ApiModel):
    """A scale-down in progress: the MTAs that go hand their queues to the MTAs that stay."""

    leaving: list[str] = Field(default_factory=list, max_length=100,
                               description="MTA pods handing their queue over before they are removed.")
    queued: dict[str, int] = Field(default_factory=dict, max_length=100,
                                   description="Messages still queued on each leaving MTA, as last seen.")
    started_at: str = Field("", max_length=64, description="When the hand-off began (RFC 3339).")
    retained_volumes: list[RetainedVolume] = Field(
        default_factory=list, max_length=100,
        description="Spool volumes of removed MTAs that still hold mail; a later scale-up brings their "
                    "MTAs back with them, and their mail is delivered.")


class WebhookStatus(ApiModel):
    """One webhook's backlog, summed over the MTAs, as last asked."""

    name: str = Field(max_length=40, description="The webhook (spec.events.webhooks[].name).")
    pending: int = Field(0, ge=0, description="Events waiting for its receiver.")
    oldest_pending_seconds: int = Field(0, ge=0, description="Age of the oldest waiting event (0: none).")
    dropped: int = Field(0, ge=0, description="Events dropped because the outbox was full (ever, on the "
                                               "MTAs that answered).")


class EventsStatus(ApiModel):
    """Delivery events, as the MTAs last reported them."""

    webhooks: list[WebhookStatus] = Field(default_factory=list, max_length=8,
                                          description="Backlog per webhook.")
    checked_at: str = Field("", max_length=64, description="When the MTAs were last asked (RFC 3339).")


class ClusterStatus(ApiModel):
    """Observed state of an MTA cluster."""

    observed_generation: ObservedGeneration
    conditions: Conditions
    mtas: MtaCounts = Field(default_factory=MtaCounts, description="MTA pods desired and ready.")
    connection: Connection = Field(default_factory=Connection, description="Where applications connect.")
    sending_domains: int = Field(0, ge=0, description="SendingDomains that reference this cluster.")
    smtp_credentials: int = Field(0, ge=0, description="SmtpCredentials that reference this cluster.")
    handoff: Handoff = Field(default_factory=Handoff, description="Queue hand-off on scale-down.")
    events: EventsStatus = Field(default_factory=EventsStatus, description="Webhook backlogs.")


class Cluster(Resource):
    """A dedicated MTA cluster."""

    crd = CrdInfo(
        kind="Cluster", plural="clusters", short_name="mtacluster",
        description="A dedicated MTA cluster: SMTP + HTTP submission relays, their Service, TLS, delivery.",
        columns=(
            PrinterColumn("Hostname", ".spec.hostname", "Public host name"),
            PrinterColumn("MTAs", ".status.mtas.summary", "MTA pods ready/desired"),
            *ready_columns()[:1],
            PrinterColumn("Domains", ".status.sendingDomains", "SendingDomains", type="integer", priority=1),
            PrinterColumn("Credentials", ".status.smtpCredentials", "SmtpCredentials", type="integer",
                          priority=1),
            *ready_columns()[1:],
        ),
        scale={"specReplicasPath": ".spec.mtas", "statusReplicasPath": ".status.mtas.ready"},
    )

    spec: ClusterSpec = Field(description="Desired state.")
    status: ClusterStatus | None = Field(None, description="Observed state, written by the operator.")
