"""Cluster, SendingDomains and SmtpCredentials → the relay's own config model (``mta_relay.config``), and
the ConfigMap that carries it to the MTAs.

Pure, and usable without an API server (``relay_files`` renders a whole config directory), so the same
code serves the operator and a local run. Paths are where the config watcher publishes things.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import yaml
from mta_relay import config as rc
from mta_relay.quota import DEFAULT_PERIOD
from mta_relay.shards import render_shards

from mta_operator import naming
from mta_operator.api import (
    Authentication,
    AuthMechanism,
    Cluster,
    DeliveryMode,
    DkimAlgorithm,
    QuotaPeriod,
    SmarthostTls,
    SmtpCredential,
    duration_seconds,
)

from .meta import Obj, child

# The config watcher publishes the settings and every file they name into CONFIG_DIR, one consistent
# snapshot at a time; paths in the settings are relative to it (subdirectories per source object).
CONFIG_DIR = "/var/run/mta-relay/config"
TLS_DIR = "tls"
DKIM_DIR = "dkim"
SMARTHOST_DIR = "smarthost"
PEER_DIR = "peer"
ADMIN_DIR = "admin"
ADMIN_TOKEN_KEY = "token"  # noqa: S105 - a key name, not a secret
WEBHOOK_DIR_PREFIX = "webhook-"
PEER_TOKEN_KEY = "token"  # noqa: S105 - a key name, not a secret
CREDENTIALS_DIR = "/var/run/mta-relay/credentials"
SPOOL_DIR = "/var/spool/mta"
HTTP_PORT = 8080
# Cluster.spec.rateLimit is a sliding window per MTA (docs/delivery.md), so a length in seconds is right.
PERIOD_SECONDS = {"Second": 1, "Minute": 60, "Hour": 3600, "Day": 86400, "Month": 30 * 86400}
# Quotas are calendar periods: the relay gets the kind (its own calendar), never a number of seconds.
QUOTA_PERIODS: dict[QuotaPeriod, rc.QuotaPeriod] = {
    QuotaPeriod.HOUR: "Hour", QuotaPeriod.DAY: "Day", QuotaPeriod.MONTH: "Month"}
CRAM_MD5 = str(AuthMechanism.CRAM_MD5)
# Cluster.spec.delivery.smarthost.tls → the relay's smarthost tls.
SMARTHOST_TLS: dict[SmarthostTls, str] = {
    SmarthostTls.REQUIRED: "STARTTLS", SmarthostTls.IMPLICIT: "Implicit",
    SmarthostTls.OPPORTUNISTIC: "Opportunistic"}


def container_port(public: int) -> int:
    """Unprivileged port the relay listens on for a public SMTP port (25 → 10025, 2587 → 12587)."""
    return 10000 + public


def smtp_ports(cluster: Cluster) -> list[tuple[str, int]]:
    """(port name, public port) of every SMTP port: ``smtp-587`` (STARTTLS), ``smtps-465`` (implicit TLS);
    the Service, the container and the SRV records use these names."""
    return ([(f"smtp-{p}", p) for p in cluster.spec.smtp.ports]
            + [(f"smtps-{p}", p) for p in cluster.spec.smtp.implicit_tls_ports])


def spf_include(cluster: Cluster) -> str:
    return f"_spf.{cluster.spec.hostname}"


@dataclass(frozen=True)
class DomainEntry:
    """A SendingDomain as the relay needs it; ``dkim`` False when signing is off or no key exists yet."""

    domain: str
    selector: str
    algorithm: DkimAlgorithm
    dkim: bool


def dkim_file_name(domain: str) -> str:
    return f"{domain}.pem"


def _delivery(cluster: Cluster) -> rc.Delivery:
    spec = cluster.spec.delivery
    if spec.mode != DeliveryMode.SMARTHOST or spec.smarthost is None:
        resolver = spec.dnssec_resolver
        return rc.Delivery(mode="MX", tls=rc.DeliveryTls(
            policy=spec.tls_policy.value,
            dnssec_resolver=rc.DnssecResolver(nameservers=list(resolver.nameservers), port=resolver.port)
            if resolver is not None else None))
    host = spec.smarthost
    tls = SMARTHOST_TLS[host.tls]
    creds = host.credentials_secret_ref is not None
    return rc.Delivery(mode="Smarthost", smarthost=rc.Smarthost(
        host=host.host, port=host.port, tls=tls,
        username_file=f"{SMARTHOST_DIR}/username" if creds else None,
        password_file=f"{SMARTHOST_DIR}/password" if creds else None))


def handoff(leaving: Iterable[str] = (), peers: Iterable[tuple[str, str]] = ()) -> rc.Handoff:
    """The hand-off section: every MTA gets the peer token (any may receive); ``leaving`` are the pod
    names that hand over their queue, ``peers`` (pod name, pod IP) the MTAs that take it."""
    return rc.Handoff(token_file=f"{PEER_DIR}/{PEER_TOKEN_KEY}", leaving=sorted(leaving),
                      peers=[rc.HandoffPeer(name=name, url=f"https://{_url_host(ip)}:{HTTP_PORT}")
                             for name, ip in sorted(peers)])


def quota_exchange(peers: Iterable[tuple[str, str]] = ()) -> rc.QuotaExchange:
    """Every MTA of the cluster, (pod name, pod IP): each MTA asks the others for their quota counts
    (an MTA skips its own name, so one list serves all). Peers that move are found again by the relays
    themselves; the list only has to be right once."""
    return rc.QuotaExchange(peers=[rc.HandoffPeer(name=name, url=f"https://{_url_host(ip)}:{HTTP_PORT}")
                                   for name, ip in sorted(peers)])


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def relay_settings(cluster: Cluster, domains: Iterable[DomainEntry],
                   handoff_section: rc.Handoff | None = None,
                   exchange: rc.QuotaExchange | None = None) -> rc.RelaySettings:
    spec = cluster.spec
    rate = spec.rate_limit
    return rc.RelaySettings(
        hostname=spec.hostname,
        smtp_listeners=[rc.SmtpListener(port=container_port(p), public_port=p) for p in spec.smtp.ports]
        + [rc.SmtpListener(port=container_port(p), public_port=p, implicit_tls=True)
           for p in spec.smtp.implicit_tls_ports],
        trace=rc.Trace(client_address=spec.smtp.trace_client_address),
        # The port always serves probes, metrics and the peers' hand-off; spec.http.enabled is submission.
        http=rc.HttpListener(enabled=True, inject=spec.http.enabled, port=HTTP_PORT, tls=True),
        tls=rc.TlsFiles(cert_file=f"{TLS_DIR}/tls.crt", key_file=f"{TLS_DIR}/tls.key"),
        credentials_dir=CREDENTIALS_DIR,
        spf_include=spf_include(cluster),
        domains=[rc.SendingDomain(domain=d.domain, dkim=rc.DkimKey(
            selector=d.selector,
            algorithm="ed25519-sha256" if d.algorithm == DkimAlgorithm.ED25519 else "rsa-sha256",
            key_file=f"{DKIM_DIR}/{dkim_file_name(d.domain)}") if d.dkim else None)
            for d in sorted(domains, key=lambda d: d.domain)],
        limits=rc.Limits(max_message_size=spec.smtp.max_message_size),
        delivery=_delivery(cluster),
        queue=rc.Queue(path=SPOOL_DIR, max_retry_age_seconds=duration_seconds(spec.queue.max_retry_age),
                       min_retry_interval_seconds=duration_seconds(spec.queue.min_retry_interval),
                       max_retry_interval_seconds=duration_seconds(spec.queue.max_retry_interval)),
        rate_limit=rc.RateLimit(messages=rate.messages, period_seconds=PERIOD_SECONDS[rate.period])
        if rate else None,
        handoff=handoff_section,
        quota_exchange=exchange,
        cluster=cluster.metadata.name,
        events=_events(cluster),
        suppression=_suppression(cluster),
        admin_token_file=f"{ADMIN_DIR}/{ADMIN_TOKEN_KEY}",
    )


def webhook_dir(name: str) -> str:
    """Where the watcher publishes a webhook's signing Secret (one subdirectory per webhook)."""
    return f"{WEBHOOK_DIR_PREFIX}{name}"


def _events(cluster: Cluster) -> rc.Events:
    spec = cluster.spec.events
    return rc.Events(
        retention_seconds=duration_seconds(spec.retention), max_stored_events=spec.max_stored_events,
        max_pending_events=spec.max_pending_events, credential_metrics=spec.credential_metrics,
        webhooks=[rc.Webhook(name=w.name, url=w.url, secret_file=f"{webhook_dir(w.name)}/{w.secret_ref.key}",
                             types=[str(t) for t in w.types], credentials=list(w.credentials))
                  for w in spec.webhooks])


def _suppression(cluster: Cluster) -> rc.Suppression:
    spec = cluster.spec.suppression
    return rc.Suppression(
        enabled=spec.enabled, classes=list(spec.classes),
        expire_after_seconds=duration_seconds(spec.expire_after) if spec.expire_after else None)


def settings_yaml(settings: rc.RelaySettings) -> str:
    return yaml.safe_dump(settings.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True)


def settings_config_map(cluster: Cluster, relay_yaml: str) -> Obj:
    name = cluster.metadata.name
    obj = child("v1", "ConfigMap", naming.settings(name), cluster, naming.labels(name, "settings"))
    obj["data"] = {"relay.yaml": relay_yaml}
    return obj


def cram_md5_offered(cluster: Cluster) -> bool:
    return AuthMechanism.CRAM_MD5 in cluster.spec.smtp.auth_mechanisms


def wants_cram_md5(cred: SmtpCredential) -> bool:
    return cred.spec.cram_md5 and cred.spec.authentication == Authentication.PASSWORD


def mechanisms(cluster: Cluster, cred: SmtpCredential | None = None) -> list[str]:
    """The SASL mechanisms of a table entry: what the Cluster offers, CRAM-MD5 only to a credential that
    opts in (its entry then carries the password itself, which the others' entries never do)."""
    cram = cred is not None and wants_cram_md5(cred)
    return [str(m) for m in cluster.spec.smtp.auth_mechanisms if m != AuthMechanism.CRAM_MD5 or cram]


def credential(cred: SmtpCredential, verifier: str | None, mechs: list[str],
               cram_md5_secret: str | None = None,
               previous: Sequence[rc.PreviousVerifier] = ()) -> rc.Credential:
    """The table entry of one SmtpCredential; ``verifier`` is None for SourceIP. ``cram_md5_secret`` (the
    password) enters the entry only when ``mechs`` has CRAM-MD5. ``previous``: replaced passwords still
    in their grace period (Password credentials only)."""
    spec = cred.spec
    quota = spec.quota
    cram = CRAM_MD5 in mechs
    if cram and not cram_md5_secret:
        raise ValueError("CRAM-MD5 needs the credential's password")
    return rc.Credential(
        username=cred.effective_username,
        authentication=str(spec.authentication),
        password_verifier=verifier if spec.authentication == Authentication.PASSWORD else None,
        previous_verifiers=list(previous) if spec.authentication == Authentication.PASSWORD else [],
        suspended=spec.suspended,
        mechanisms=mechs,
        cram_md5_secret=cram_md5_secret if cram else None,
        domains=rc.Domains(mode=str(spec.domains.mode), names=list(spec.domains.names)),
        allowed_ips=list(spec.allowed_ips),
        quota=rc.Quota(messages=quota.messages, period=quota_period(cred))
        if quota and quota.messages else None,
        allow_sender_header=spec.allow_sender_header,
        allow_null_sender=spec.allow_null_sender,
        bypass_suppressions=spec.bypass_suppression_list,
    )


def quota_period(cred: SmtpCredential) -> rc.QuotaPeriod:
    """The period the relays count the credential's messages in: its quota's, a UTC day without one."""
    quota = cred.spec.quota
    return QUOTA_PERIODS[quota.period] if quota is not None and quota.messages else DEFAULT_PERIOD


def summary(cred: SmtpCredential) -> str:
    """What a person checks first: 'All domains, all IPs', '2 domains, 3 IPs', 'Cluster domains, 1 IP';
    'Suspended: ...' in front while spec.suspended."""
    domains = cred.spec.domains
    if domains.mode == "AnyDomain":
        left = "All domains"
    elif domains.mode == "AllClusterDomains":
        left = "Cluster domains"
    else:
        count = len(domains.names)
        left = f"{count} domain{'s' if count != 1 else ''}"
    ips = len(cred.spec.allowed_ips)
    right = "all IPs" if not ips else f"{ips} IP{'s' if ips != 1 else ''}"
    return f"{'Suspended: ' if cred.spec.suspended else ''}{left}, {right}"


def relay_files(settings: rc.RelaySettings, credentials: Iterable[rc.Credential]) -> dict[str, str]:
    """A complete config directory (relative path → text), as the relay's loader reads it."""
    local = settings.model_copy(update={"credentials_dir": "credentials"})
    files = {"relay.yaml": settings_yaml(local)}
    files.update({f"credentials/{name}": text for name, text in render_shards(credentials).items()})
    return files
