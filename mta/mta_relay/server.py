"""Serving: SMTP listeners and the HTTP site on one event loop, config reload, graceful shutdown.
Delivery runs in a process of its own (``delivery.process``), started here after spool recovery, and so
does each extra SMTP serving process (``workers``), on the listening sockets opened here.

``RelayServer(config_dir)`` needs nothing but a config directory (and the TLS files it names), so the
pod, the local mode and the benchmark all start the relay the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiohttp import web

from mta_relay import admin_api, config_loader, generation, smtp_serving, usage
from mta_relay.config import RelaySettings
from mta_relay.config_loader import ConfigError
from mta_relay.delivery.process import DeliveryProcess
from mta_relay.events import from_config as events_config
from mta_relay.events.store import EventWriter
from mta_relay.http_api import make_app
from mta_relay.relay import Relay
from mta_relay.spool import Spool
from mta_relay.suppressions import store as suppression_store
from mta_relay.suppressions.exchange import Puller
from mta_relay.suppressions.store import SuppressionStore
from mta_relay.workers.pool import WorkerPool

log = logging.getLogger("mta_relay")
RELOAD_POLL_SECONDS = 0.5  # a removed credential must stop working within 2 s
HEALTH_POLL_SECONDS = 2.0
SUPPRESSION_PURGE_SECONDS = 60.0


class RelayServer:
    def __init__(self, config_dir: Path, listen_address: str | None = None,
                 pod_name: str | None = None, workers: int = 1) -> None:
        """``workers``: SMTP serving processes, this one included (``workers.count`` sizes it for the
        pod); each other one is a process that serves the same listening sockets."""
        self.config_dir = config_dir
        self.workers = workers
        self.pod_name = pod_name  # the StatefulSet pod name, matched against handoff.leaving
        # Overrides every listener's address: a pod binds its own IP (downward API) when pods share a host.
        self.listen_address = listen_address
        self.relay: Relay | None = None
        self._servers: list[asyncio.Server] = []
        self._http: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._fingerprint: tuple[object, ...] = ()
        self._events: EventWriter | None = None
        self._admin: admin_api.Admin | None = None
        self.pool: WorkerPool | None = None

    async def start(self) -> Relay:
        """Load the config (ConfigError if unusable), recover the spool, open every listener."""
        # The fingerprint is taken before the build: a change published while it runs is then seen by
        # the first poll instead of being taken for the generation in force.
        seen = await asyncio.to_thread(config_loader.load_settings, self.config_dir)
        self._fingerprint = await asyncio.to_thread(config_loader.fingerprint, self.config_dir, seen)
        gen = await asyncio.to_thread(generation.build, self.config_dir)
        settings = gen.config.settings
        spool = Spool(config_loader.resolve_path(self.config_dir, settings.queue.path))
        report = await asyncio.to_thread(spool.recover)
        log.info("spool recovered", extra={"fields": {"event": "spool_recovered",
                                                      "entries": len(report.entries),
                                                      "quarantined": list(report.quarantined)}})
        relay = self.relay = Relay(self.config_dir, gen, spool, self.pod_name)
        relay.events = self._events = events_config.writer(self.config_dir, settings)
        relay.delivery = DeliveryProcess(self.config_dir, spool, self.pod_name)
        await relay.delivery.start()
        relay.queued = relay.delivery.notify
        listeners = smtp_serving.open_listeners(settings, self.listen_address)
        self._servers = await smtp_serving.serve(relay, listeners)
        relay.metrics.serving_processes.set(1)
        loop = asyncio.get_running_loop()
        if settings.http.enabled:
            app = make_app(relay)
            self._admin = admin_api.Admin(self.config_dir, lambda: relay.settings, self.pod_name,
                                          relay.event_store, lambda: relay.suppressions,
                                          lambda: relay.delivery)
            admin_api.add_routes(app, self._admin)
            self._http = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._http.setup()
            await web.TCPSite(self._http, self.listen_address or settings.http.address, settings.http.port,
                              ssl_context=relay.http_tls if settings.http.tls else None).start()
        relay.exchange = usage.Exchange(relay, self._self_url(settings))
        relay.suppressions = await asyncio.to_thread(SuppressionStore,
                                                     suppression_store.store_path(spool.root))
        puller = Puller(relay.suppressions, relay.exchange)
        self._tasks = [loop.create_task(self._watch_config()), loop.create_task(self._watch_health()),
                       loop.create_task(relay.exchange.run()), loop.create_task(puller.run()),
                       loop.create_task(self._purge_suppressions())]
        if self.workers > 1:  # they join as they come up; the kernel queues connections meanwhile
            self.pool = WorkerPool(relay, self.config_dir, listeners, self.workers, self.pod_name)
            self.pool.start()
            relay.worker_metrics = self.pool.metrics_texts
        log.info("serving", extra={"fields": {
            "event": "serving", "smtp": self.smtp_ports,
            "http": settings.http.port if settings.http.enabled else None, "workers": self.workers,
            "settings_snapshot": config_loader.snapshot_name(self._fingerprint)}})
        return relay

    def _self_url(self, settings: RelaySettings) -> str | None:
        """Where the peers reach this MTA (announced to them by the quota exchange): its own address,
        when it binds one (a pod binds its IP), and the HTTPS port."""
        port = self.http_port
        if not self.listen_address or port is None or not settings.http.tls:
            return None
        host = f"[{self.listen_address}]" if ":" in self.listen_address else self.listen_address
        return f"https://{host}:{port}"

    @property
    def smtp_ports(self) -> list[int]:
        return [s.sockets[0].getsockname()[1] for s in self._servers]

    @property
    def http_port(self) -> int | None:
        return self._http.addresses[0][1] if self._http is not None and self._http.addresses else None

    async def reload(self) -> bool:
        """Build a new generation; on any error keep the one in force and say why in one log line."""
        assert self.relay is not None
        try:
            gen = await asyncio.to_thread(generation.build, self.config_dir)
        except ConfigError as error:
            self.relay.metrics.config_reloads.labels("refused").inc()
            log.error("config refused, previous config stays in force",
                      extra={"fields": {"event": "config_refused", "reason": str(error)}})
            return False
        if gen.config.settings.smtp_listeners != self.relay.settings.smtp_listeners:
            log.warning("listener changes take effect at the next restart",
                        extra={"fields": {"event": "config_restart_needed"}})
        self.relay.install(gen)
        if self._admin is not None:
            self._admin.reload()
        if self._events is not None:
            settings = gen.config.settings
            self._events.configure(events_config.filters(settings), events_config.limits(settings))
        if self.relay.delivery is not None:
            self.relay.delivery.reconfigure()
        if self.pool is not None:
            self.pool.reload()
        self.relay.metrics.config_reloads.labels("applied").inc()
        log.info("config reloaded", extra={"fields": {
            "event": "config_reloaded", "credentials": len(gen.config.credentials),
            "settings_snapshot": config_loader.snapshot_name(self._fingerprint)}})
        return True

    async def _watch_config(self) -> None:
        assert self.relay is not None
        while True:
            await asyncio.sleep(RELOAD_POLL_SECONDS)
            current = await asyncio.to_thread(config_loader.fingerprint, self.config_dir, self.relay.settings)
            if current != self._fingerprint:
                self._fingerprint = current
                await self.reload()

    async def _watch_health(self) -> None:
        assert self.relay is not None
        relay = self.relay
        while True:
            await asyncio.to_thread(relay.refresh_spool_health)
            relay.metrics.queue_depth.set(await asyncio.to_thread(relay.spool.depth))
            relay.count_spool_writes()
            avail, size = await asyncio.to_thread(relay.spool.filesystem_bytes)
            relay.metrics.spool_avail.set(avail)
            relay.metrics.spool_size.set(size)
            relay.readiness()
            await asyncio.sleep(HEALTH_POLL_SECONDS)

    async def _purge_suppressions(self) -> None:
        """Expired entries and old tombstones go; the gauge follows the list."""
        assert self.relay is not None
        store = self.relay.suppressions
        assert store is not None
        while True:
            await asyncio.to_thread(store.purge)
            self.relay.metrics.suppressions.set(await asyncio.to_thread(store.count))
            await asyncio.sleep(SUPPRESSION_PURGE_SECONDS)

    async def shutdown(self) -> None:
        """Not ready at once; stop accepting; let sessions finish their transaction within the grace time;
        then close what is left."""
        relay = self.relay
        if relay is None:
            return
        deadline = time.monotonic() + relay.settings.limits.shutdown_grace_seconds
        ending = [smtp_serving.end_sessions(relay, self._servers, deadline)]
        if self.pool is not None:
            ending.append(self.pool.drain(deadline))  # the other serving processes end theirs meanwhile
        await asyncio.gather(*ending)
        if relay.delivery is not None:
            await relay.delivery.drain(deadline)  # keeps delivering until the grace time is nearly over
        for task in self._tasks:
            task.cancel()
        if self._http is not None:
            await self._http.cleanup()
        relay.passwords.close()
        if self._events is not None:
            await asyncio.to_thread(self._events.close)
        await asyncio.to_thread(relay.close_event_store)
        if relay.suppressions is not None:
            await asyncio.to_thread(relay.suppressions.close)
        await relay.save_state()  # quota counts since the last save (state_files)
        log.info("stopped", extra={"fields": {"event": "stopped"}})
