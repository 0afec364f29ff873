"""kopf wiring: settings (own prefixes, watch timeouts, no handler-log Events) and event handlers that feed
the controller. Event handlers keep no per-object state in annotations: the controller is level-based."""

from __future__ import annotations

from typing import Any

import kopf

from . import naming
from .api import GROUP, VERSION
from .controller.controller import Controller
from .controller.leader import LeaderElector

SERVER_TIMEOUT = 300  # the API server ends each watch after this; kopf reconnects from the last version


def register(registry: kopf.OperatorRegistry, controller: Controller,
             elector: LeaderElector | None = None) -> None:
    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = f"{naming.PREFIX}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=naming.PREFIX, key="last-handled-configuration")
        settings.watching.server_timeout = SERVER_TIMEOUT
        settings.watching.client_timeout = SERVER_TIMEOUT + 30
        settings.watching.connect_timeout = 10
        settings.networking.request_timeout = 30
        # kopf runs one small task per object; a limit here would throttle intake to limit/idle_timeout
        # objects per second. The bounded part is the controller's work queue and API thread pool.
        settings.batching.worker_limit = None
        settings.batching.idle_timeout = 1.0
        settings.batching.batch_window = 0.05
        settings.posting.enabled = False  # Events are ours, for transitions only; not every log line
        controller.launch(elector)  # not awaited: kopf starts its watches only after startup handlers

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await controller.stop()
        if elector is not None:
            elector.release()

    for plural, kind in (("clusters", "Cluster"), ("sendingdomains", "SendingDomain"),
                         ("smtpcredentials", "SmtpCredential")):
        _watch(registry, controller, plural, kind)

    @kopf.on.event("apps", "v1", "statefulsets", labels=naming.MANAGED_BY, registry=registry)
    async def statefulset(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_statefulset(event["type"] or "ADDED", event["object"])


def _watch(registry: kopf.OperatorRegistry, controller: Controller, plural: str, kind: str) -> None:
    @kopf.on.event(GROUP, VERSION, plural, registry=registry)
    async def on_event(event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
        try:
            controller.on_object(kind, event["type"] or "ADDED", event["object"])
        except ValueError as error:  # a body the models refuse (older schema): report, do not crash
            logger.warning("cannot read object", extra={"error": str(error).splitlines()[0]})
