"""The delivery side as the relay process runs it: built from the config in force, started after spool
recovery, reconfigured on reload, drained on shutdown. The server calls these; see docs/delivery.md."""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from mta_relay.config import RelaySettings
from mta_relay.config_loader import ConfigError
from mta_relay.delivery import from_config
from mta_relay.delivery.metrics import DeliveryMetrics
from mta_relay.queue import QueueRunner
from mta_relay.spool import Spool

log = logging.getLogger("mta_relay.delivery")


async def start(settings: RelaySettings, config_dir: Path, spool: Spool,
                registry: CollectorRegistry) -> QueueRunner:
    """Raises ConfigError when delivery settings cannot be used (a DKIM key or smarthost file missing)."""
    runner = QueueRunner(spool, from_config.deliverer(settings, config_dir),
                         from_config.queue_settings(settings),
                         signer=from_config.signer(settings, config_dir), metrics=DeliveryMetrics(registry))
    await runner.start()
    return runner


def reconfigure(runner: QueueRunner, settings: RelaySettings, config_dir: Path) -> None:
    """Apply a reloaded config; if its delivery files cannot be read, keep delivering with the old one."""
    try:
        deliverer = from_config.deliverer(settings, config_dir)
        signer = from_config.signer(settings, config_dir)
    except ConfigError as error:
        log.error("delivery config refused, previous one stays in force",
                  extra={"fields": {"event": "delivery_config_refused", "reason": str(error)}})
        return
    runner.reconfigure(deliverer, signer, from_config.queue_settings(settings))
