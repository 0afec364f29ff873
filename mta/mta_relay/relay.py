"""The relay's shared state on its one event loop: the config generation in force, the spool, quotas,
AUTH throttling, password checks, connection counts, metrics, readiness, the peer token (hand-off).
Quota counts (own and the peers' last known, ``quota``) are loaded from and saved to the spool volume
(``state_files``): they survive a restart. ``usage`` is the exchange of counts with the peer MTAs."""

from __future__ import annotations

import collections
import logging
from pathlib import Path

from mta_relay import config_loader, handoff, state_files
from mta_relay.auth_throttle import AuthThrottle
from mta_relay.delivery.process import DeliveryProcess
from mta_relay.events.record import EventSink
from mta_relay.generation import Generation, tls_context
from mta_relay.metrics import Metrics
from mta_relay.passwords import PasswordChecker
from mta_relay.quota import QuotaTracker
from mta_relay.spool import Spool
from mta_relay.usage import Exchange

log = logging.getLogger("mta_relay")


class Relay:
    def __init__(self, config_dir: Path, generation: Generation, spool: Spool,
                 pod_name: str | None = None) -> None:
        self.config_dir = config_dir
        self.pod_name = pod_name
        self.gen = generation
        self.spool = spool
        # Read once at start, on the loop: a small file, before any client is served.
        quota_file = state_files.quota_path(spool.root)
        self._quota_saver = state_files.Debounced(quota_file, lambda: state_files.encode_quota(
            self.quota.snapshot()))
        self.quota = QuotaTracker(saved=state_files.load(quota_file, state_files.decode_quota, ({}, {})),
                                  on_change=self._quota_saver.changed)
        self.exchange: Exchange | None = None  # the quota exchange with the peers, started by the server
        self.throttle = AuthThrottle(generation.config.settings.limits)
        self.passwords = PasswordChecker()
        self.metrics = Metrics()
        self.connections: collections.Counter[str] = collections.Counter()  # open sessions per client IP
        self.sessions: set[object] = set()  # open SMTP protocols, for graceful shutdown
        self.draining = False
        self.delivery: DeliveryProcess | None = None  # the delivery process, started by the server
        self.events: EventSink | None = None  # Reception and Rejection events, started by the server
        self.spool_ok = spool.probe(generation.config.settings.limits.max_message_size)
        tls = generation.config.settings.tls
        # aiohttp keeps the context it started with: reloads load the new certificate into this one
        self.http_tls = tls_context(config_dir, tls.cert_file, tls.key_file)
        self.peer_token = handoff.read_token(config_dir, generation.config.settings)
        self.handoff_received = handoff.received_counter(self.metrics.registry)

    @property
    def settings(self):
        return self.gen.config.settings

    def install(self, generation: Generation) -> None:
        self.gen = generation
        self.throttle.limits = generation.config.settings.limits
        tls = generation.config.settings.tls
        self.http_tls.load_cert_chain(config_loader.resolve_path(self.config_dir, tls.cert_file),
                                      config_loader.resolve_path(self.config_dir, tls.key_file))
        self.peer_token = handoff.read_token(self.config_dir, generation.config.settings)

    @property
    def leaving(self) -> bool:
        """The settings name this MTA as leaving: it hands its queue to its peers (``delivery.handoff``)."""
        return handoff.is_leaving(self.settings, self.pod_name)
    async def save_state(self) -> None:
        """At shutdown: write the quota counts changed since the last save."""
        await self._quota_saver.flush()

    def refresh_spool_health(self) -> None:
        self.spool_ok = self.spool.probe(self.settings.limits.max_message_size)

    def readiness(self) -> dict[str, bool]:
        """Each condition /readyz requires (the config and TLS are loaded once a generation exists)."""
        checks = {"config": True, "tls": True, "spool": self.spool_ok, "not_draining": not self.draining,
                  "not_leaving": not self.leaving}
        self.metrics.ready.set(1 if all(checks.values()) else 0)
        return checks
