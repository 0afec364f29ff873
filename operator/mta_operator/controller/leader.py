"""Leader election over a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it: one
replica holds the Lease and reconciles; the others watch the same objects (their index stays warm) and
take over when the holder stops renewing.

Why a Lease and not kopf's peering: peering makes operators of *different* priorities yield to each
other and freezes those of equal priority with a warning; it has no notion of one active replica among
equals, no bounded takeover and no fencing. A Lease is what Kubernetes' own controllers, cert-manager and
CloudNativePG use, it needs one namespaced object and ``get/create/update`` on it, and its timing is
explicit: a standby takes over at most ``DURATION + RETRY`` seconds after the holder's last renewal.

Writes are optimistic (the Lease's resourceVersion): of two replicas that see the Lease free, one update
wins and the other gets 409 and stays standby. A holder that cannot renew within ``DURATION`` minus a
margin stops the whole process (``on_lost``), so two replicas never reconcile at once; it restarts as a
standby.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mta_operator.kube.client import ApiError, KubeClient

log = logging.getLogger("mta_operator.leader")
API_VERSION = "coordination.k8s.io/v1"
LEASE_NAME = "mta-operator"
DURATION = 10  # seconds a holder's renewal is good for
RENEW_EVERY = 2.0
RETRY_EVERY = 1.0
# A holder that has not renewed for this long gives up before the Lease can be taken from it.
RENEW_DEADLINE = DURATION - 2 * RENEW_EVERY


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def micro_time(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Claim:
    """The Lease spec to write if ``identity`` may hold it now; None: someone else holds it."""

    spec: dict[str, Any] | None
    transition: bool = False


def claim(spec: dict[str, Any], identity: str, now: dt.datetime, duration: int = DURATION) -> Claim:
    """Pure: may ``identity`` hold a Lease whose spec is ``spec`` at ``now``?"""
    holder = spec.get("holderIdentity") or ""
    renewed = _time(spec.get("renewTime"))
    held_for = int(spec.get("leaseDurationSeconds") or duration)
    expired = renewed is None or now >= renewed + dt.timedelta(seconds=held_for)
    if holder and holder != identity and not expired:
        return Claim(None)
    transition = holder != identity
    new = {"holderIdentity": identity, "leaseDurationSeconds": duration, "renewTime": micro_time(now),
           "acquireTime": micro_time(now) if transition else spec.get("acquireTime") or micro_time(now),
           "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if transition and holder else 0)}
    return Claim(new, transition)


class LeaderElector:
    def __init__(self, kube: KubeClient, namespace: str, identity: str, name: str = LEASE_NAME,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.kube, self.namespace, self.identity, self.name = kube, namespace, identity, name
        self._clock = clock
        self.leading = False

    def _try(self) -> bool:
        """One attempt to acquire or renew (blocking I/O); True when this replica holds the Lease now."""
        live = self.kube.get(API_VERSION, "Lease", self.namespace, self.name)
        now = self._clock()
        if live is None:
            body = {"apiVersion": API_VERSION, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": claim({}, self.identity, now).spec}
            try:
                self.kube.create(body)
            except ApiError as error:
                if error.status == 409:
                    return False  # created by another replica a moment ago
                raise
            return True
        decided = claim(live.get("spec") or {}, self.identity, now)
        if decided.spec is None:
            return False
        live["spec"] = decided.spec
        try:
            self.kube.replace(live)
        except ApiError as error:
            if error.status == 409:
                return False  # another replica wrote first
            raise
        return True

    async def acquire(self) -> None:
        """Until this replica holds the Lease."""
        loop = asyncio.get_running_loop()
        waiting_logged = False
        while True:
            try:
                if await loop.run_in_executor(None, self._try):
                    self.leading = True
                    log.info("leadership acquired", extra={"identity": self.identity, "lease": self.name})
                    return
            except ApiError as error:
                log.warning("lease not reachable", extra={"error": str(error)})
            if not waiting_logged:
                log.info("standby: another replica leads", extra={"identity": self.identity})
                waiting_logged = True
            await asyncio.sleep(RETRY_EVERY)

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew for as long as the process runs; ``on_lost`` when a renewal cannot succeed in time."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                if await loop.run_in_executor(None, self._try):
                    last = loop.time()
                    continue
                log.error("leadership taken by another replica", extra={"identity": self.identity})
                on_lost()
                return
            except ApiError as error:
                log.warning("lease renewal failed", extra={"error": str(error)})
            if loop.time() - last > RENEW_DEADLINE:
                log.error("leadership lost: no renewal in time", extra={"identity": self.identity})
                on_lost()
                return

    def release(self) -> None:
        """On a clean stop: end the term at once, so a standby need not wait for it to expire."""
        if not self.leading:
            return
        try:
            live = self.kube.get(API_VERSION, "Lease", self.namespace, self.name)
            if live is not None and (live.get("spec") or {}).get("holderIdentity") == self.identity:
                live["spec"] = {**live["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
                self.kube.replace(live)
        except ApiError as error:
            log.warning("lease not released", extra={"error": str(error)})
        self.leading = False
