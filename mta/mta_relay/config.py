"""The relay's configuration model, version 1: everything `mta-relay` needs to serve, and nothing else.

The operator renders this format; the relay only reads it (see ``config_loader`` for the files). Field
names are camelCase in files (Kubernetes style) and snake_case in Python; unknown fields are refused, so
a config from a newer operator is rejected as a whole (and the relay keeps the one in force) rather than
half-understood.

Secrets: ``Credential`` carries only password *verifiers*, except ``cramMd5Secret`` (CRAM-MD5 needs a
recoverable secret). Credentials are therefore only ever read from the credential shard files, which the
operator renders into Secrets, never into the ConfigMap that holds ``RelaySettings``.

Parts other components use:
- ``delivery``, ``queue``, ``rate_limit``, ``domains[].dkim``: plain settings for the delivery side
  (``mta_relay.delivery``); the front door does not interpret them.
- ``quota_exchange``: the peer MTAs this one exchanges quota counts with (see ``quota`` and ``usage``).
"""

from __future__ import annotations

import datetime
import ipaddress
import urllib.parse
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from mta_relay.events.classify import CATEGORIES
from mta_relay.events.record import EventType
from mta_relay.usernames import USERNAME_PATTERN

CONFIG_VERSION: Final = 1  # Final: its type is Literal[1], the models' version field
# RFC 1035 names (lower-case enforced by the validators below), no trailing dot.
DOMAIN_PATTERN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$"

Port = Annotated[int, Field(ge=0, le=65535)]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class SmtpListener(_Model):
    """One SMTP port. ``port`` is where the process listens (unprivileged in a pod); ``public_port`` is the
    port clients see through the Service (25, 587, 2587, 465), used only in logs and metrics labels.
    ``implicit_tls``: TLS from the first byte (RFC 8314, port 465 by convention) instead of STARTTLS;
    the same policy, AUTH offered at once, STARTTLS not offered."""

    port: Port
    public_port: Port | None = None
    address: str = "0.0.0.0"  # noqa: S104 - a pod serves on all its addresses; tests use loopback
    implicit_tls: bool = False


class Trace(_Model):
    """What the relay's Received field says (``trace_headers``). ``client_address`` false leaves out the
    client's EHLO name and address, as many submission services do for their users' privacy."""

    client_address: bool = True


class HttpListener(_Model):
    """The HTTP port: injection API, /healthz, /readyz, /metrics and the peers' /internal/v1/*. HTTPS with
    the cluster's certificate by default, since Basic auth carries the password (kubelet probes with
    scheme HTTPS). ``inject`` off keeps the port for probes, metrics and peers, and refuses submission."""

    enabled: bool = True
    inject: bool = True
    port: Port = 8080
    tls: bool = True
    address: str = "0.0.0.0"  # noqa: S104 - see SmtpListener


class TlsFiles(_Model):
    """PEM files as mounted from a kubernetes.io/tls Secret. Reloaded with the rest of the config."""

    cert_file: str
    key_file: str


class Limits(_Model):
    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(default=100, ge=1)
    idle_timeout_seconds: float = Field(default=300, gt=0)
    max_connections_per_ip: int = Field(default=50, ge=1)
    # Failed AUTH throttling, per source IP and per username, over a sliding window.
    auth_failure_window_seconds: float = Field(default=300, gt=0)
    auth_failures_before_delay: int = Field(default=3, ge=1)
    auth_failures_before_disconnect: int = Field(default=10, ge=1)
    auth_failure_delay_seconds: float = Field(default=1.0, ge=0)
    shutdown_grace_seconds: float = Field(default=20, ge=0)


class Dns(_Model):
    """Resolver for SPF checks (AnyDomain). Empty ``nameservers`` = the system resolver."""

    nameservers: list[str] = Field(default_factory=list)
    port: Port = 53
    timeout_seconds: float = Field(default=3, gt=0)


class DkimKey(_Model):
    selector: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    key_file: str


class SendingDomain(_Model):
    domain: Annotated[str, Field(pattern=DOMAIN_PATTERN, max_length=253)]
    dkim: DkimKey | None = None

    @field_validator("domain", mode="before")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower() if isinstance(value, str) else value


QuotaPeriod = Literal["Hour", "Day", "Month"]


class Quota(_Model):
    """Messages per period for the whole cluster (0 = unlimited). The period is a UTC calendar period
    (``quota.period_start``): a Month is the calendar month, so the relay is told the kind, not seconds."""

    messages: int = Field(ge=0)
    period: QuotaPeriod = "Day"


class Domains(_Model):
    mode: Literal["Specific", "AllClusterDomains", "AnyDomain"] = "Specific"
    names: list[str] = Field(default_factory=list)

    @field_validator("names", mode="before")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [name.lower() for name in value] if isinstance(value, list) else value


Mechanism = Literal["PLAIN", "LOGIN", "CRAM-MD5"]


def _default_mechanisms() -> list[Mechanism]:
    return ["PLAIN", "LOGIN"]


class PreviousVerifier(_Model):
    """A password the credential had before its newest one, still accepted until ``not_after`` (a
    rotation's grace period). The relay refuses it from ``not_after`` on by itself, so expiry holds while
    the operator is away; the operator drops it from the table afterwards. ``created``: when that password
    was made; the relay does not read it, the operator reports it in status after a restart (the table is
    where the operator keeps what it knows of a credential's passwords)."""

    verifier: str
    not_after: datetime.datetime
    created: datetime.datetime | None = None

    @field_validator("not_after", "created")
    @classmethod
    def _aware(cls, value: datetime.datetime | None) -> datetime.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("times need a time zone (RFC 3339, e.g. 2026-01-02T03:04:05Z)")
        return value


class Credential(_Model):
    """One SmtpCredential as the relay enforces it.

    ``password_verifier``: ``hmac-sha256$<salt b64>$<digest b64>`` for operator-generated 32-character
    random passwords (about 190 bits: a fast salted hash cannot be brute-forced, and keeps AUTH cheap), or
    an argon2id PHC string for user-supplied passwords (possibly weak: memory-hard, checked in a worker
    thread and cached). See ``passwords``. It is the newest password's, which never expires by itself;
    ``previous_verifiers`` are older passwords kept valid through a rotation's grace period.

    ``suspended``: the credential stays in the table (so it can be resumed without a new password) and is
    refused at AUTH, at HTTP Basic and, for SourceIP, at MAIL, with its own reply.
    """

    username: Annotated[str, Field(pattern=USERNAME_PATTERN)]
    authentication: Literal["Password", "SourceIP"] = "Password"
    password_verifier: str | None = None
    previous_verifiers: list[PreviousVerifier] = Field(default_factory=list)
    suspended: bool = False
    mechanisms: list[Mechanism] = Field(default_factory=_default_mechanisms)
    cram_md5_secret: str | None = Field(default=None, repr=False)
    domains: Domains = Field(default_factory=Domains)
    allowed_ips: list[IPNetwork] = Field(default_factory=list, alias="allowedIPs")  # empty = any source
    quota: Quota | None = None
    allow_sender_header: bool = False
    # MAIL FROM:<> (bounces of a mail server relaying through the cluster); refused unless set
    allow_null_sender: bool = False
    # Sent to suppressed recipients all the same (the list still records this credential's bounces).
    bypass_suppressions: bool = False

    @field_validator("allowed_ips", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if not isinstance(value, list):
            return value  # pydantic reports what is not a list
        return [ipaddress.ip_network(str(item), strict=False) for item in value]

    @model_validator(mode="after")
    def _consistent(self) -> Credential:
        if self.authentication == "Password" and not self.password_verifier:
            raise ValueError("Password credentials need passwordVerifier")
        if self.previous_verifiers and self.authentication != "Password":
            raise ValueError("previousVerifiers are only for Password credentials")
        if self.authentication == "SourceIP":
            if not self.allowed_ips:
                raise ValueError("SourceIP credentials need allowedIPs")
            if any(net.prefixlen == 0 for net in self.allowed_ips):
                raise ValueError("SourceIP credentials may not allow 0.0.0.0/0 or ::/0")
        if "CRAM-MD5" in self.mechanisms and not self.cram_md5_secret:
            raise ValueError("CRAM-MD5 needs cramMd5Secret")
        if self.domains.mode == "Specific" and not self.domains.names:
            raise ValueError("domains.mode Specific needs domains.names")
        return self

    def verifiers(self, now: datetime.datetime) -> list[str]:
        """The verifiers a password may match at ``now``: the newest, then the previous ones not expired."""
        live = [p.verifier for p in self.previous_verifiers if now < p.not_after]
        return [self.password_verifier, *live] if self.password_verifier else live


class CredentialShard(_Model):
    """One credentials file (one Secret key). Shards are merged; a username may appear only once."""

    version: Literal[1] = CONFIG_VERSION
    credentials: list[Credential] = Field(default_factory=list)


class Smarthost(_Model):
    """The next hop for all mail. ``tls``: STARTTLS (required, certificate verified), Implicit (TLS from
    the first byte, verified), Opportunistic (STARTTLS when offered, unverified; plaintext otherwise, as
    towards MX hosts) or None."""

    host: str
    port: Port = 587
    tls: Literal["STARTTLS", "Implicit", "Opportunistic", "None"] = "STARTTLS"
    username_file: str | None = None
    password_file: str | None = None


class DnssecResolver(_Model):
    """A DNSSEC-validating resolver whose AD bit the relay trusts for DANE. Declaring it is the trust:
    the path to it carries no signatures, so it must be on loopback (a sidecar) or inside the cluster's
    network, never across the Internet."""

    nameservers: list[str] = Field(min_length=1)
    port: Port = 53
    timeout_seconds: float = Field(default=3, gt=0)


TlsPolicyName = Literal["Auto", "MtaSts", "Dane", "Opportunistic", "Required", "None"]


class DeliveryTls(_Model):
    """TLS towards MX hosts (``delivery.tls_policy`` applies it; docs/delivery.md, "Outbound TLS policy").

    ``ca_file``: PEM CAs trusted instead of the system's for MTA-STS policy fetches and PKIX-verified
    hops. For tests and private PKI only; the operator never renders it."""

    policy: TlsPolicyName = "Auto"
    dnssec_resolver: DnssecResolver | None = None
    ca_file: str | None = None

    @model_validator(mode="after")
    def _dane_needs_resolver(self) -> DeliveryTls:
        if self.policy == "Dane" and self.dnssec_resolver is None:
            raise ValueError("delivery.tls.policy Dane needs delivery.tls.dnssecResolver")
        return self


class ShapingRate(_Model):
    """At most ``messages`` transactions started in any ``period_seconds`` (a sliding window)."""

    messages: int = Field(ge=1)
    period_seconds: float = Field(gt=0)


class ShapingLimits(_Model):
    """What one destination may take from this MTA; unset fields come from the default (see
    ``delivery.shaping``, which owns the precedence)."""

    max_connections: int | None = Field(default=None, ge=1)
    messages_per_connection: int | None = Field(default=None, ge=1)
    rate: ShapingRate | None = None
    connect_timeout_seconds: float | None = Field(default=None, gt=0)
    transaction_timeout_seconds: float | None = Field(default=None, gt=0)


class ShapingRule(ShapingLimits):
    """Limits for the destinations a rule matches: recipient ``domains`` (exact) or ``mx_hosts`` (a
    resolved MX host name, exact, or under a suffix written with a leading dot: ``.google.com``)."""

    name: str = Field(min_length=1, max_length=63)
    domains: list[str] = Field(default_factory=list)
    mx_hosts: list[str] = Field(default_factory=list)

    @field_validator("domains", "mx_hosts", mode="before")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [name.lower().rstrip(".") if not name.startswith(".") else name.lower()
                for name in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _matches_something(self) -> ShapingRule:
        if not self.domains and not self.mx_hosts:
            raise ValueError(f"delivery.shaping.rules[{self.name}]: needs domains or mxHosts")
        return self


class Shaping(_Model):
    """Per-destination shaping (``delivery.shaping``): the user's rules and default over the built-in
    table; a destination answering a throttle reply is suspended for ``suspend_first_seconds``, doubling on
    repeats up to ``suspend_max_seconds``."""

    builtin: bool = True
    default: ShapingLimits = Field(default_factory=ShapingLimits)
    rules: list[ShapingRule] = Field(default_factory=list)
    suspend_first_seconds: float = Field(default=60, gt=0)
    suspend_max_seconds: float = Field(default=3600, gt=0)

    @model_validator(mode="after")
    def _valid(self) -> Shaping:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("delivery.shaping.rules: names must be unique")
        if self.suspend_first_seconds > self.suspend_max_seconds:
            raise ValueError("delivery.shaping: suspendFirstSeconds must not exceed suspendMaxSeconds")
        return self


class Route(_Model):
    """Where the mail of some recipient or sender domains goes instead of the default route: MX,
    ``smarthosts`` tried in order (the next when one cannot be reached or refuses the session), or Hold
    (deferred: the operator refused the route's next hops, e.g. a loop back into the cluster)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    recipient_domains: list[str] = Field(default_factory=list)
    sender_domains: list[str] = Field(default_factory=list)
    mode: Literal["MX", "Smarthost", "Hold"] = "MX"
    smarthosts: list[Smarthost] = Field(default_factory=list)

    @field_validator("recipient_domains", "sender_domains", mode="before")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [name.lower().rstrip(".") for name in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _consistent(self) -> Route:
        if not self.recipient_domains and not self.sender_domains:
            raise ValueError(f"delivery.routes[{self.name}]: needs recipientDomains or senderDomains")
        if (self.mode == "Smarthost") != bool(self.smarthosts):
            raise ValueError(f"delivery.routes[{self.name}]: smarthosts are for mode Smarthost (and needed)")
        return self


class Delivery(_Model):
    """Onward delivery. ``mode``/``smarthost`` are the default route (Hold: deferred, see ``Route``);
    ``routes`` go first; ``mx_port`` is the port MX hosts are reached on (25; tests and local runs only)."""

    mode: Literal["MX", "Smarthost", "Hold"] = "MX"
    smarthost: Smarthost | None = None
    concurrency: int = Field(default=20, ge=1)
    tls: DeliveryTls = Field(default_factory=DeliveryTls)
    routes: list[Route] = Field(default_factory=list)
    shaping: Shaping = Field(default_factory=Shaping)
    mx_port: Port = 25

    @model_validator(mode="after")
    def _smarthost(self) -> Delivery:
        if self.mode == "Smarthost" and self.smarthost is None:
            raise ValueError("delivery.mode Smarthost needs delivery.smarthost")
        names = [route.name for route in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("delivery.routes: names must be unique")
        return self


class Queue(_Model):
    path: str = "/var/spool/mta"
    max_retry_age_seconds: int = Field(default=5 * 86400, ge=60)
    # Backoff between attempts: the first wait, doubling (with jitter) up to the longest.
    min_retry_interval_seconds: float = Field(default=300, gt=0)
    max_retry_interval_seconds: float = Field(default=3600, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Queue:
        if self.min_retry_interval_seconds > self.max_retry_interval_seconds:
            raise ValueError("queue.minRetryIntervalSeconds must not exceed queue.maxRetryIntervalSeconds")
        return self


class RateLimit(_Model):
    """Per-MTA outbound limit; over it, mail waits in the queue (never rejected)."""

    messages: int = Field(ge=1)
    period_seconds: int = Field(default=60, ge=1)


class HandoffPeer(_Model):
    """An MTA that stays: ``name`` its pod name, ``url`` its HTTPS base (``https://<pod IP>:<http port>``)."""

    name: str = Field(min_length=1)
    url: Annotated[str, Field(pattern=r"^https://[^/\s]+/?$")]


class Handoff(_Model):
    """Scale-down hand-off (see ``handoff``): the MTAs named in ``leaving`` send their queue to ``peers``.

    ``token_file`` holds the cluster's peer token (absolute, or relative to the config directory): peers
    present it as a Bearer token on ``/internal/v1/*``; it never opens the SMTP or injection doors."""

    token_file: str = Field(min_length=1)
    leaving: list[str] = Field(default_factory=list)
    peers: list[HandoffPeer] = Field(default_factory=list)


class QuotaExchange(_Model):
    """The MTAs that share the quotas (``usage``): every MTA asks each of ``peers`` for its counts every
    ``interval_seconds`` (peer token from ``handoff.tokenFile``, certificate pinned). An MTA skips its
    own name. ``peers`` is where to start: a peer that asks also says where it is, so an MTA replaced
    while the operator is away is found again without new settings."""

    peers: list[HandoffPeer] = Field(default_factory=list)
    interval_seconds: float = Field(default=1.0, gt=0, le=60)


MAX_URL_LENGTH = 2048


def validate_url(url: str, allow_insecure_http: bool = False) -> str | None:
    """What is wrong with ``url`` as a webhook's URL, or None (the settings check it; so does the sender)."""
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "the URL contains whitespace or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (parsing the port is the check)
    except ValueError:
        return "the URL does not parse (a port that is not a number from 0 to 65535?)"
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_insecure_http:
        return "plain http:// is refused: events carry addresses; use https://"
    if scheme not in ("https", "http"):
        return f"the URL's scheme must be https, not {scheme or 'missing'}"
    if parts.username is not None or parts.password is not None:
        return "the URL carries credentials (user:password@); the signature authenticates the sender"
    if not parts.hostname:
        return "the URL has no host"
    if parts.fragment:
        return "the URL has a fragment (#...), which is never sent"
    return None


class Webhook(_Model):
    """An event receiver (``events.webhooks``). ``secret_file``: the Standard Webhooks signing secret
    (``whsec_...``), relative to the config directory unless absolute. ``ca_file``: a CA bundle trusted
    besides the system's. Plain ``http://`` only with ``allow_insecure_http`` (tests, loopback)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")]
    url: str = Field(min_length=8, max_length=2048)
    secret_file: str = Field(min_length=1)
    types: list[str] = Field(default_factory=list)
    credentials: list[str] = Field(default_factory=list)
    ca_file: str | None = None
    allow_insecure_http: bool = False
    timeout_seconds: float = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _valid(self) -> Webhook:
        problem = validate_url(self.url, allow_insecure_http=self.allow_insecure_http)
        if problem:
            raise ValueError(f"events.webhooks[{self.name}].url: {problem}")
        unknown = sorted(set(self.types) - {str(t) for t in EventType})
        if unknown:
            raise ValueError(f"events.webhooks[{self.name}].types: unknown event types {unknown}")
        return self


class Events(_Model):
    """Delivery events (``mta_relay.events``): the local store on the spool volume and the webhooks."""

    retention_seconds: int = Field(default=7 * 86400, ge=60)
    max_stored_events: int = Field(default=5_000_000, ge=1000)
    max_pending_events: int = Field(default=1_000_000, ge=100)
    credential_metrics: bool = False
    webhooks: list[Webhook] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Events:
        names = [w.name for w in self.webhooks]
        if len(set(names)) != len(names):
            raise ValueError("events.webhooks: names must be unique")
        return self


class Suppression(_Model):
    """The Cluster's suppression list: whether it is in force, which hard bounces add their recipient,
    for how long."""

    enabled: bool = True  # false: nothing added, nothing refused (the entries are kept)
    classes: list[str] = Field(default_factory=lambda: ["InvalidRecipient"])
    expire_after_seconds: int | None = Field(default=None, ge=60)

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - CATEGORIES)
        if unknown:
            raise ValueError(f"unknown bounce class {unknown[0]!r}; one of {sorted(CATEGORIES)}")
        return value


class RelaySettings(_Model):
    """The ConfigMap part (``relay.yaml``): everything but the credentials."""

    version: Literal[1] = CONFIG_VERSION
    hostname: str
    cluster: str = ""  # the Cluster's name, in events
    smtp_listeners: list[SmtpListener] = Field(min_length=1)
    http: HttpListener = Field(default_factory=HttpListener)
    tls: TlsFiles
    # Relative to the config directory unless absolute: where the credential shard files are.
    credentials_dir: str = "credentials"
    # The SPF include name of this cluster; AnyDomain senders must reference it (``include:<it>``).
    spf_include: str | None = None
    dns: Dns = Field(default_factory=Dns)
    domains: list[SendingDomain] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    delivery: Delivery = Field(default_factory=Delivery)
    queue: Queue = Field(default_factory=Queue)
    rate_limit: RateLimit | None = None
    handoff: Handoff | None = None
    quota_exchange: QuotaExchange | None = None
    # The admin API's token (``admin_api``: messages), relative to the config directory unless absolute;
    # unset: the admin API answers 404.
    admin_token_file: str | None = None
    trace: Trace = Field(default_factory=Trace)
    events: Events = Field(default_factory=Events)
    suppression: Suppression = Field(default_factory=Suppression)


class RelayConfig(_Model):
    """What the relay serves: settings plus the merged credentials, validated together."""

    settings: RelaySettings
    credentials: tuple[Credential, ...] = ()

    @model_validator(mode="after")
    def _unique_usernames(self) -> RelayConfig:
        seen: set[str] = set()
        for cred in self.credentials:
            if cred.username in seen:
                raise ValueError(f"duplicate credential username {cred.username!r}")
            seen.add(cred.username)
        if any(c.domains.mode == "AnyDomain" for c in self.credentials) and not self.settings.spf_include:
            raise ValueError("AnyDomain credentials need spfInclude")
        return self
