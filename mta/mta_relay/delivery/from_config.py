"""Builds the delivery side (route, DKIM signer, queue settings) from the relay's config.

Files the settings name (smarthost credentials, DKIM keys) are read here, relative to the config
directory unless absolute; errors name the file, never its content.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from mta_relay import state_files
from mta_relay.config import RelaySettings
from mta_relay.config_loader import ConfigError, resolve_path
from mta_relay.delivery import mta_sts
from mta_relay.delivery.backoff import RetryPolicy
from mta_relay.delivery.client import Credentials, HopPolicy, TlsMode
from mta_relay.delivery.metrics import DeliveryMetrics
from mta_relay.delivery.mx import make_resolver
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer, Route, smarthost_route
from mta_relay.delivery.tls_policy import (
    OutboundTls,
    SecureDns,
    StsCache,
    StsPolicies,
    TlsObserver,
    TlsPolicy,
    trusted_resolver,
)
from mta_relay.dkim_sign import DkimKey, DkimSigner
from mta_relay.queue import QueueSettings

MX_PORT = 25
PER_DESTINATION = 10  # concurrent connections to one smarthost or one MX domain
_SMARTHOST_TLS = {"STARTTLS": TlsMode.REQUIRED, "Implicit": TlsMode.IMPLICIT,
                  "Opportunistic": TlsMode.OPPORTUNISTIC, "None": TlsMode.NONE}


def _read(config_dir: Path, path: str) -> bytes:
    try:
        return resolve_path(config_dir, path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None


def route(settings: RelaySettings, config_dir: Path, metrics: DeliveryMetrics | None = None) -> Route:
    delivery = settings.delivery
    observer = TlsObserver(metrics.tls if metrics is not None else None)
    if delivery.mode == "Smarthost":
        host = delivery.smarthost
        assert host is not None  # the model requires it in Smarthost mode
        credentials = None
        if host.username_file and host.password_file:
            credentials = Credentials(_read(config_dir, host.username_file).decode().strip(),
                                      _read(config_dir, host.password_file).decode().strip())
        # The system CAs are loaded here, once per route (start, or a reload that changes the route).
        return smarthost_route(host.host, HopPolicy(helo_name=settings.hostname, port=host.port,
                                                    tls=_SMARTHOST_TLS[host.tls], credentials=credentials,
                                                    verify_context=ssl.create_default_context(),
                                                    tls_observer=observer))
    return mx_route_with_tls(settings, config_dir, observer)


def mx_route_with_tls(settings: RelaySettings, config_dir: Path, observer: TlsObserver, *,
                      port: int = MX_PORT, https_port: int = 443) -> Route:
    """MX delivery under ``delivery.tls`` (``tls_policy``). ``port``, ``https_port``: for tests, which
    cannot listen on 25 and 443."""
    tls = settings.delivery.tls
    resolver = make_resolver(settings.dns.nameservers, settings.dns.port, settings.dns.timeout_seconds)
    context = _verify_context(config_dir, tls.ca_file)
    cache = StsCache.at(state_files.state_dir(Path(settings.queue.path)) / mta_sts.CACHE_FILE)
    dane = None
    if tls.dnssec_resolver is not None:
        dane = SecureDns(trusted_resolver(tls.dnssec_resolver.nameservers, tls.dnssec_resolver.port,
                                          tls.dnssec_resolver.timeout_seconds))
    outbound = OutboundTls(TlsPolicy(tls.policy), resolver, observer, dane=dane,
                           sts=StsPolicies(resolver, context, cache, observer, port=https_port))
    return Route(HopPolicy(helo_name=settings.hostname, port=port, tls=TlsMode.OPPORTUNISTIC,
                           verify_context=context, tls_observer=observer), outbound.hops, by_domain=True)


def _verify_context(config_dir: Path, ca_file: str | None) -> ssl.SSLContext:
    """The context for PKIX checks towards MX hosts and MTA-STS policy hosts: the system CAs, or only
    those of ``ca_file`` (tests, private PKI)."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cadata=_read(config_dir, ca_file).decode())
    except (ssl.SSLError, ValueError) as error:
        raise ConfigError(f"{ca_file}: not PEM certificates ({type(error).__name__})") from None


def deliverer(settings: RelaySettings, config_dir: Path, metrics: DeliveryMetrics | None = None) -> Deliverer:
    return Deliverer(route(settings, config_dir, metrics), ConnectionPool(per_destination=PER_DESTINATION))


def signer(settings: RelaySettings, config_dir: Path) -> DkimSigner:
    keys = []
    for domain in settings.domains:
        if domain.dkim is not None:
            pem = _read(config_dir, domain.dkim.key_file)
            keys.append(DkimKey(domain.domain, domain.dkim.selector, pem))
    try:
        return DkimSigner(keys)
    except ValueError as error:
        raise ConfigError(f"DKIM keys: {error}") from None


def queue_settings(settings: RelaySettings) -> QueueSettings:
    limit = settings.rate_limit
    return QueueSettings(reporting_mta=settings.hostname, concurrency=settings.delivery.concurrency,
                         retry=RetryPolicy(first=settings.queue.min_retry_interval_seconds,
                                           cap=settings.queue.max_retry_interval_seconds,
                                           max_age=settings.queue.max_retry_age_seconds),
                         rate_limit=(limit.messages, float(limit.period_seconds)) if limit else None,
                         credential_metrics=settings.events.credential_metrics)
