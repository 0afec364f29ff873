"""The relay's shared state on its one event loop: the config generation in force, the spool, quotas,
AUTH throttling, password checks, connection counts, metrics, readiness, the peer token (hand-off).
Quota counts (own and the peers' last known, ``quota``) are loaded from and saved to the spool volume
(``state_files``): they survive a restart. ``usage`` is the exchange of counts with the peer MTAs."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from cryptography import x509

from mta_relay import config_loader, handoff, state_files
from mta_relay.auth_throttle import AuthThrottle
from mta_relay.config import RelaySettings
from mta_relay.delivery.process import DeliveryProcess
from mta_relay.events import from_config as events_config
from mta_relay.events.record import EventSink
from mta_relay.events.store import EventStore
from mta_relay.generation import Generation, tls_context
from mta_relay.metrics import Metrics
from mta_relay.passwords import PasswordChecker
from mta_relay.quota import QuotaTracker
from mta_relay.spool import Spool
from mta_relay.suppressions.store import SuppressionStore
from mta_relay.usage import Exchange
from mta_relay.workers.ledger import LocalLedger, QuotaLedger

log = logging.getLogger("mta_relay")


class OpenSession(Protocol):
    """What a graceful shutdown needs of an open SMTP session (``smtp_session.RelaySession``, which
    imports this module)."""

    @property
    def connection(self) -> asyncio.Transport | None: ...

    def close_if_idle(self) -> bool: ...


class Relay:
    def __init__(self, config_dir: Path, generation: Generation, spool: Spool,
                 pod_name: str | None = None, ledger: QuotaLedger | None = None) -> None:
        """``ledger``: given in a serving process other than the first, whose quota questions the first
        process answers (``workers.ledger``); the first keeps the counts and saves them."""
        self.config_dir = config_dir
        self.pod_name = pod_name
        self.gen = generation
        self.spool = spool
        self._quota_saver: state_files.Debounced | None = None
        if ledger is None:
            # Read once at start, on the loop: a small file, before any client is served.
            quota_file = state_files.quota_path(spool.root)
            saver = self._quota_saver = state_files.Debounced(quota_file, lambda: state_files.encode_quota(
                self.quota.snapshot()))
            empty: state_files.Counts = ({}, {})
            self.quota = QuotaTracker(saved=state_files.load(quota_file, state_files.decode_quota, empty),
                                      on_change=saver.changed)
        else:
            self.quota = QuotaTracker()  # unused: the first process counts
        self.ledger: QuotaLedger = ledger or LocalLedger(self.quota)
        # An entry made durable: tell delivery (the first process's DeliveryProcess.notify, or in another
        # serving process a note to the first).
        self.queued: Callable[[str], None] | None = None
        # The expositions of the pod's other SMTP serving processes (``workers.pool``), for /metrics.
        self.worker_metrics: Callable[[], Awaitable[list[str]]] | None = None
        self.exchange: Exchange | None = None  # the quota exchange with the peers, started by the server
        self.throttle = AuthThrottle(generation.config.settings.limits)
        self.passwords = PasswordChecker()
        self.metrics = Metrics()
        self.connections: collections.Counter[str] = collections.Counter()  # open sessions per client IP
        self.sessions: set[OpenSession] = set()  # open SMTP protocols, for graceful shutdown
        self.draining = False
        self.delivery: DeliveryProcess | None = None  # the delivery process, started by the server
        self.events: EventSink | None = None  # Reception and Rejection events, started by the server
        self.suppressions: SuppressionStore | None = None  # the Cluster's list, opened by the server
        self.spool_ok = spool.probe(generation.config.settings.limits.max_message_size)
        tls = generation.config.settings.tls
        # aiohttp keeps the context it started with: reloads load the new certificate into this one
        self.http_tls = tls_context(config_dir, tls.cert_file, tls.key_file)
        self.peer_token = handoff.read_token(config_dir, generation.config.settings)
        self.handoff_received = handoff.received_counter(self.metrics.registry)
        self._record_certificate_expiry()
        self._event_store: EventStore | None = None
        self._event_store_lock = threading.Lock()

    def event_store(self) -> EventStore:
        """The front door's one connection to the event store (admin queries, webhook backlog, events a
        leaving peer hands over), opened at first use and kept until shutdown. Connections opened and
        closed per request while the delivery process wrote lost that process's later commits on the
        test bed: a closing connection that takes itself for the last one checkpoints and removes the
        WAL. One long-lived connection per process leaves that to shutdown. Blocking: call it off the
        loop."""
        with self._event_store_lock:
            if self._event_store is None:
                self._event_store = EventStore(events_config.store_path(self.config_dir, self.settings))
            store = self._event_store
        events = self.settings.events
        store.retention, store.max_events = float(events.retention_seconds), events.max_stored_events
        store.max_pending = events.max_pending_events
        return store

    def close_event_store(self) -> None:
        with self._event_store_lock:
            if self._event_store is not None:
                self._event_store.close()
                self._event_store = None

    @property
    def settings(self) -> RelaySettings:
        return self.gen.config.settings

    def install(self, generation: Generation) -> None:
        self.gen = generation
        self.throttle.limits = generation.config.settings.limits
        tls = generation.config.settings.tls
        self.http_tls.load_cert_chain(config_loader.resolve_path(self.config_dir, tls.cert_file),
                                      config_loader.resolve_path(self.config_dir, tls.key_file))
        self.peer_token = handoff.read_token(self.config_dir, generation.config.settings)
        self._record_certificate_expiry()

    def _record_certificate_expiry(self) -> None:
        """The gauge follows the certificate just loaded (an unreadable notAfter leaves it as it was: the
        context loaded, so the file was good a moment ago)."""
        path = config_loader.resolve_path(self.config_dir, self.settings.tls.cert_file)
        try:
            der = handoff.leaf_certificate(path.read_bytes())
            not_after = x509.load_der_x509_certificate(der).not_valid_after_utc
        except (OSError, ValueError) as error:
            log.warning("cannot read the certificate's expiry", extra={"fields": {
                "event": "certificate_expiry_unknown", "reason": error.__class__.__name__}})
            return
        self.metrics.certificate_expiry.set(not_after.timestamp())

    @property
    def leaving(self) -> bool:
        """The settings name this MTA as leaving: it hands its queue to its peers (``delivery.handoff``)."""
        return handoff.is_leaving(self.settings, self.pod_name)
    async def save_state(self) -> None:
        """At shutdown: write the quota counts changed since the last save."""
        if self._quota_saver is not None:
            await self._quota_saver.flush()

    def count_spool_writes(self) -> None:
        """The spool's write and sync counts into their gauges (at each scrape and health round)."""
        self.metrics.spool_fsyncs.set(self.spool.fsyncs)
        self.metrics.spool_writes.set(self.spool.entries_written)

    def refresh_spool_health(self) -> None:
        self.spool_ok = self.spool.probe(self.settings.limits.max_message_size)

    def readiness(self) -> dict[str, bool]:
        """Each condition /readyz requires (the config and TLS are loaded once a generation exists)."""
        checks = {"config": True, "tls": True, "spool": self.spool_ok, "not_draining": not self.draining,
                  "not_leaving": not self.leaving}
        self.metrics.ready.set(1 if all(checks.values()) else 0)
        return checks
