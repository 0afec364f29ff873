"""The operator's core in process, in seconds: the real ``Controller``, work queue, start-up listing,
reconcilers, table writer and applier, over ``support.fake_kube.FakeKube`` (a dict-backed ``KubeClient``
with resourceVersions, conflicts, server-side apply per field manager, not-found errors, garbage
collection, watch events and injected failures). Watch events reach the controller through the same calls
kopf's handlers make (``handlers.py``). No test bed, subprocess or socket: every module is marked ``unit``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from mta_operator import naming
from mta_operator.api import API_VERSION
from mta_operator.controller.controller import KINDS, Controller
from mta_operator.options import Options
from mta_operator.reconcile import table as table_writer
from support.examples import examples
from support.fake_kube import FakeKube
from support.objects import apply, condition, cr

NAMESPACE = "mail"
OPTIONS = Options(namespaces=(NAMESPACE,), workers=4, table_debounce=0.01, relay_image="mta-relay:test")


def connect(kube: FakeKube, ctl: Controller) -> None:
    """What kopf's event handlers do with each watch event (``handlers.register``)."""
    def deliver(kind: str, event_type: str, obj: dict[str, Any]) -> None:
        if kind in KINDS:
            with contextlib.suppress(ValueError):  # a body the models refuse: kopf's handler logs it
                ctl.on_object(kind, event_type, obj)
        elif kind == "StatefulSet" and (obj["metadata"].get("labels") or {}).get(
                "app.kubernetes.io/managed-by") == naming.MANAGED_BY["app.kubernetes.io/managed-by"]:
            ctl.on_statefulset(event_type, obj)
    kube.watch(deliver)


async def wait_for(check: Callable[[], Any], what: str, within: float = 15.0) -> Any:
    """Let the loop run until ``check()`` is truthy; its value."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.01)


@dataclass
class Core:
    """One fake API server and the operator processes run against it, one at a time."""

    kube: FakeKube = field(default_factory=FakeKube)
    ctl: Controller | None = None

    async def start(self, options: Options = OPTIONS) -> Controller:
        """An operator process starting: watches connected, then the start-up listing and the workers (what
        ``Controller.launch`` does without leader election)."""
        self.ctl = Controller(self.kube, options)
        connect(self.kube, self.ctl)
        await self.ctl.start()
        return self.ctl

    async def stop(self) -> None:
        """The process ends: no more watch events, workers and table writers cancelled."""
        self.kube.unwatch()
        if self.ctl is not None:
            await self.ctl.stop()
            self.ctl = None

    def apply(self, *objs: dict[str, Any]) -> None:
        apply(self.kube, *objs)

    def cr(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.kube.stored(API_VERSION, kind, NAMESPACE, name)

    async def ready(self, kind: str, name: str, within: float = 15.0) -> dict[str, Any]:
        return await wait_for(lambda: (o := cr(self.kube, kind, NAMESPACE, name))
                              and condition(o, "Ready").get("status") == "True" and o,
                              f"{kind} {name} Ready", within)


@pytest.fixture
async def core(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Core]:
    monkeypatch.setattr(table_writer, "RETRY_SECONDS", 0.02)
    setup = Core()
    yield setup
    await setup.stop()


def credentials(*names: str) -> list[dict[str, Any]]:
    """The examples' SmtpCredentials (all, or those named) and the Secrets they reference."""
    docs = examples(NAMESPACE)
    return [d for d in docs if d["kind"] == "Secret" or
            (d["kind"] == "SmtpCredential" and (not names or d["metadata"]["name"] in names))]


def cluster_and_domains() -> list[dict[str, Any]]:
    return [d for d in examples(NAMESPACE) if d["kind"] in {"Cluster", "SendingDomain"}]
