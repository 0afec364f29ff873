"""Builds the delivery side (routes, shaping, DKIM signer, queue settings) from the relay's config.

Files the settings name (smarthost credentials, DKIM keys) are read here, relative to the config
directory unless absolute; errors name the file, never its content.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from mta_relay import state_files
from mta_relay.config import RelaySettings, Smarthost
from mta_relay.config_loader import ConfigError, resolve_path
from mta_relay.delivery import mta_sts
from mta_relay.delivery.backoff import RetryPolicy
from mta_relay.delivery.client import Credentials, HopPolicy, TlsMode
from mta_relay.delivery.metrics import DeliveryMetrics
from mta_relay.delivery.mx import make_resolver
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer, Route, Routes, hold_route, smarthosts_route
from mta_relay.delivery.shaping import Shaper, ShapingTable
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

# The pool's own per-destination cap, a backstop above any shaping limit (delivery.shaping decides).
PER_DESTINATION = 1000
HOLD_TEXT = ("4.3.5 route {name} is held: its next hops were refused (see the Cluster's DeliveryReady "
             "condition)")
_SMARTHOST_TLS = {"STARTTLS": TlsMode.REQUIRED, "Implicit": TlsMode.IMPLICIT,
                  "Opportunistic": TlsMode.OPPORTUNISTIC, "None": TlsMode.NONE}


def _read(config_dir: Path, path: str) -> bytes:
    try:
        return resolve_path(config_dir, path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None


def _smarthost_policy(settings: RelaySettings, host: Smarthost, config_dir: Path,
                      observer: TlsObserver) -> HopPolicy:
    credentials = None
    if host.username_file and host.password_file:
        credentials = Credentials(_read(config_dir, host.username_file).decode().strip(),
                                  _read(config_dir, host.password_file).decode().strip())
    # The system CAs are loaded here, once per route (start, or a reload that changes the route).
    return HopPolicy(helo_name=settings.hostname, port=host.port, tls=_SMARTHOST_TLS[host.tls],
                     credentials=credentials, verify_context=ssl.create_default_context(),
                     tls_observer=observer)


class _MxRoutes:
    """MX routes under ``delivery.tls`` (``tls_policy``): one policy cache and one observer for every MX
    route of a config (the cache is one file on the spool volume)."""

    def __init__(self, settings: RelaySettings, config_dir: Path, observer: TlsObserver, *,
                 port: int | None = None, https_port: int = 443) -> None:
        tls = settings.delivery.tls
        resolver = make_resolver(settings.dns.nameservers, settings.dns.port, settings.dns.timeout_seconds)
        self.context = _verify_context(config_dir, tls.ca_file)
        cache = StsCache.at(state_files.state_dir(Path(settings.queue.path)) / mta_sts.CACHE_FILE)
        dane = None
        if tls.dnssec_resolver is not None:
            dane = SecureDns(trusted_resolver(tls.dnssec_resolver.nameservers, tls.dnssec_resolver.port,
                                              tls.dnssec_resolver.timeout_seconds))
        self.outbound = OutboundTls(TlsPolicy(tls.policy), resolver, observer, dane=dane,
                                    sts=StsPolicies(resolver, self.context, cache, observer, port=https_port))
        self.policy = HopPolicy(helo_name=settings.hostname,
                                port=settings.delivery.mx_port if port is None else port,
                                tls=TlsMode.OPPORTUNISTIC, verify_context=self.context, tls_observer=observer)

    def route(self, name: str = "default") -> Route:
        return Route(self.policy, self.outbound.hops, by_domain=True, name=name)


def mx_route_with_tls(settings: RelaySettings, config_dir: Path, observer: TlsObserver, *,
                      port: int | None = None, https_port: int = 443) -> Route:
    """MX delivery under ``delivery.tls``. ``port``, ``https_port``: for tests, which cannot listen on 25
    and 443 (unset ``port``: ``delivery.mxPort``)."""
    return _MxRoutes(settings, config_dir, observer, port=port, https_port=https_port).route()


def _verify_context(config_dir: Path, ca_file: str | None) -> ssl.SSLContext:
    """The context for PKIX checks towards MX hosts and MTA-STS policy hosts: the system CAs, or only
    those of ``ca_file`` (tests, private PKI)."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cadata=_read(config_dir, ca_file).decode())
    except (ssl.SSLError, ValueError) as error:
        raise ConfigError(f"{ca_file}: not PEM certificates ({type(error).__name__})") from None


def _default_route(settings: RelaySettings, config_dir: Path, observer: TlsObserver, mx: _MxRoutes) -> Route:
    delivery = settings.delivery
    if delivery.mode == "Smarthost":
        host = delivery.smarthost
        assert host is not None  # the model requires it in Smarthost mode
        return smarthosts_route([(host.host, _smarthost_policy(settings, host, config_dir, observer))])
    if delivery.mode == "Hold":
        return hold_route("default", HOLD_TEXT.format(name="default"), mx.policy)
    return mx.route()


def route(settings: RelaySettings, config_dir: Path, metrics: DeliveryMetrics | None = None) -> Route:
    """The default route (``delivery.mode``)."""
    observer = TlsObserver(metrics.tls if metrics is not None else None)
    return _default_route(settings, config_dir, observer, _MxRoutes(settings, config_dir, observer))


def routes(settings: RelaySettings, config_dir: Path, metrics: DeliveryMetrics | None = None) -> Routes:
    """The default route and ``delivery.routes`` by recipient and by sender domain."""
    observer = TlsObserver(metrics.tls if metrics is not None else None)
    mx = _MxRoutes(settings, config_dir, observer)
    by_recipient: dict[str, Route] = {}
    by_sender: dict[str, Route] = {}
    for spec in settings.delivery.routes:
        if spec.mode == "Smarthost":
            built = smarthosts_route([(h.host, _smarthost_policy(settings, h, config_dir, observer))
                                      for h in spec.smarthosts], spec.name)
        elif spec.mode == "Hold":
            built = hold_route(spec.name, HOLD_TEXT.format(name=spec.name), mx.policy)
        else:
            built = mx.route(spec.name)
        for domain in spec.recipient_domains:
            by_recipient.setdefault(domain, built)  # the first route naming a domain wins
        for domain in spec.sender_domains:
            by_sender.setdefault(domain, built)
    return Routes(_default_route(settings, config_dir, observer, mx), by_recipient, by_sender)


def shaper(settings: RelaySettings, kept: Shaper | None = None) -> Shaper:
    """The shaper of ``settings``; ``kept``, the one in force before a reload, is given the new settings
    and keeps its counters and suspensions."""
    shaping = settings.delivery.shaping
    if kept is None:
        return Shaper(ShapingTable(shaping), suspend_first=shaping.suspend_first_seconds,
                      suspend_max=shaping.suspend_max_seconds)
    kept.reconfigure(ShapingTable(shaping), suspend_first=shaping.suspend_first_seconds,
                     suspend_max=shaping.suspend_max_seconds)
    return kept


def deliverer(settings: RelaySettings, config_dir: Path, metrics: DeliveryMetrics | None = None,
              kept: Shaper | None = None) -> Deliverer:
    """``kept``: the shaper in force (a reload), which carries over with the new settings."""
    return Deliverer(routes(settings, config_dir, metrics), ConnectionPool(per_destination=PER_DESTINATION),
                     shaper(settings, kept))


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
