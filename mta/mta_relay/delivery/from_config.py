"""Builds the delivery side (routes, shaping, DKIM signer, queue settings) from the relay's config.

Files the settings name (smarthost credentials, DKIM keys) are read here, relative to the config
directory unless absolute; errors name the file, never its content.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from mta_relay.config import RelaySettings, Smarthost
from mta_relay.config_loader import ConfigError, resolve_path
from mta_relay.delivery.backoff import RetryPolicy
from mta_relay.delivery.client import Credentials, HopPolicy, TlsMode
from mta_relay.delivery.mx import make_resolver
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer, Route, Routes, hold_route, mx_route, smarthosts_route
from mta_relay.delivery.shaping import Shaper, ShapingTable
from mta_relay.dkim_sign import DkimKey, DkimSigner
from mta_relay.queue import QueueSettings

MX_PORT = 25
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


def _smarthost_policy(settings: RelaySettings, host: Smarthost, config_dir: Path) -> HopPolicy:
    credentials = None
    if host.username_file and host.password_file:
        credentials = Credentials(_read(config_dir, host.username_file).decode().strip(),
                                  _read(config_dir, host.password_file).decode().strip())
    # The system CAs are loaded here, once per route (start, or a reload that changes the route).
    return HopPolicy(helo_name=settings.hostname, port=host.port, tls=_SMARTHOST_TLS[host.tls],
                     credentials=credentials, verify_context=ssl.create_default_context())


def route(settings: RelaySettings, config_dir: Path) -> Route:
    """The default route (``delivery.mode``)."""
    delivery = settings.delivery
    mx_policy = HopPolicy(helo_name=settings.hostname, port=delivery.mx_port, tls=TlsMode.OPPORTUNISTIC)
    if delivery.mode == "Smarthost":
        host = delivery.smarthost
        assert host is not None  # the model requires it in Smarthost mode
        return smarthosts_route([(host.host, _smarthost_policy(settings, host, config_dir))])
    if delivery.mode == "Hold":
        return hold_route("default", HOLD_TEXT.format(name="default"), mx_policy)
    resolver = make_resolver(settings.dns.nameservers, settings.dns.port, settings.dns.timeout_seconds)
    return mx_route(resolver, mx_policy)


def routes(settings: RelaySettings, config_dir: Path) -> Routes:
    """The default route and ``delivery.routes`` by recipient and by sender domain."""
    delivery = settings.delivery
    mx_policy = HopPolicy(helo_name=settings.hostname, port=delivery.mx_port, tls=TlsMode.OPPORTUNISTIC)
    resolver = make_resolver(settings.dns.nameservers, settings.dns.port, settings.dns.timeout_seconds)
    by_recipient: dict[str, Route] = {}
    by_sender: dict[str, Route] = {}
    for spec in delivery.routes:
        if spec.mode == "Smarthost":
            built = smarthosts_route([(h.host, _smarthost_policy(settings, h, config_dir))
                                      for h in spec.smarthosts], spec.name)
        elif spec.mode == "Hold":
            built = hold_route(spec.name, HOLD_TEXT.format(name=spec.name), mx_policy)
        else:
            built = mx_route(resolver, mx_policy, spec.name)
        for domain in spec.recipient_domains:
            by_recipient.setdefault(domain, built)  # the first route naming a domain wins
        for domain in spec.sender_domains:
            by_sender.setdefault(domain, built)
    return Routes(route(settings, config_dir), by_recipient, by_sender)


def shaper(settings: RelaySettings) -> Shaper:
    shaping = settings.delivery.shaping
    return Shaper(ShapingTable(shaping), suspend_first=shaping.suspend_first_seconds,
                  suspend_max=shaping.suspend_max_seconds)


def deliverer(settings: RelaySettings, config_dir: Path) -> Deliverer:
    return Deliverer(routes(settings, config_dir), ConnectionPool(per_destination=PER_DESTINATION),
                     shaper(settings))


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
