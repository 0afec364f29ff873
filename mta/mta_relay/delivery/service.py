"""The delivery side as the relay process runs it: built from the config in force, started after spool
recovery (resuming the retry schedule and the rate window it finds on the spool volume), reconfigured on
reload, drained on shutdown. The server calls these; see docs/delivery.md."""

from __future__ import annotations

import asyncio
import logging
import weakref
from pathlib import Path

from prometheus_client import CollectorRegistry

from mta_relay import state_files
from mta_relay.config import RelaySettings
from mta_relay.config_loader import ConfigError
from mta_relay.delivery import from_config
from mta_relay.delivery.holds import Holds
from mta_relay.delivery.metrics import DeliveryMetrics
from mta_relay.queue import QueueRunner
from mta_relay.spool import Spool

log = logging.getLogger("mta_relay.delivery")
_route_inputs: weakref.WeakKeyDictionary[QueueRunner, tuple[object, ...]] = weakref.WeakKeyDictionary()


async def start(settings: RelaySettings, config_dir: Path, spool: Spool,
                registry: CollectorRegistry) -> QueueRunner:
    """Raises ConfigError when delivery settings cannot be used (a DKIM key or smarthost file missing).
    The queue's suspensions are loaded first, so nothing they hold goes out after a restart."""
    holds = await asyncio.to_thread(Holds.load, state_files.suspensions_path(spool.root))
    metrics = DeliveryMetrics(registry)
    runner = QueueRunner(spool, from_config.deliverer(settings, config_dir, metrics),
                         from_config.queue_settings(settings),
                         signer=from_config.signer(settings, config_dir), metrics=metrics,
                         rate_window_file=state_files.rate_window_path(spool.root), holds=holds)
    _route_inputs[runner] = _route_key(settings)
    await runner.start()
    return runner


def reconfigure(runner: QueueRunner, settings: RelaySettings, config_dir: Path) -> None:
    """Apply a reloaded config; if its delivery files cannot be read, keep delivering with the old one."""
    key = _route_key(settings)
    try:
        signer = from_config.signer(settings, config_dir)
        # Same route: keep the deliverer and its open connections (reloads happen for credential edits).
        # Another: a new deliverer, with the shaper in force (its counters and suspensions stay). Built
        # last: the shaper takes the new settings only when nothing else of the reload is refused.
        deliverer = (None if _route_inputs.get(runner) == key else
                     from_config.deliverer(settings, config_dir, runner.metrics, runner.deliverer.shaper))
    except ConfigError as error:
        log.error("delivery config refused, previous one stays in force",
                  extra={"fields": {"event": "delivery_config_refused", "reason": str(error)}})
        return
    _route_inputs[runner] = key
    runner.reconfigure(deliverer or runner.deliverer, signer, from_config.queue_settings(settings))
    log.info("delivery config applied", extra={"fields": {"event": "delivery_config_applied",
                                                          "route": "rebuilt" if deliverer else "kept"}})


def _route_key(settings: RelaySettings) -> tuple[object, ...]:
    return (settings.delivery, settings.dns, settings.hostname)
