"""The operator's core, independent of kopf: watch events update the in-memory index and queue jobs;
workers hand each job to its reconciler (``mta_operator.reconcile``), with API calls in a bounded thread
pool; one debounced writer per Cluster writes the credential table. The ``Controller`` is the
reconcilers' ``Context``: the few services they may use. State changes happen on the event loop only, so
no locks are needed."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, TypeVarTuple

from mta_operator.api import Cluster, Resource, SendingDomain, SmtpCredential
from mta_operator.api.reasons import Reason
from mta_operator.kube.apply import Applier
from mta_operator.kube.client import KubeClient
from mta_operator.options import Options
from mta_operator.reconcile import cluster as reconcile_cluster
from mta_operator.reconcile import credential as reconcile_credential
from mta_operator.reconcile import domain as reconcile_domain
from mta_operator.reconcile import table as table_writer
from mta_operator.reconcile import usage as reconcile_usage
from mta_operator.reconcile.context import Job, JobKind
from mta_operator.reconcile.index import Index, Key
from mta_operator.reconcile.table import Table
from mta_operator.render.conditions import now_text

from . import startup, status_write
from .leader import LeaderElector
from .workqueue import WorkQueue

log = logging.getLogger("mta_operator")
T = TypeVar("T")
R = TypeVar("R", bound=Resource)
Args = TypeVarTuple("Args")
STATS_SECONDS = 5
OBJECT_OF: dict[JobKind, str] = {"cluster": "Cluster", "cluster-status": "Cluster", "domain": "SendingDomain",
             "verify": "SendingDomain", "cred": "SmtpCredential", "cred-status": "SmtpCredential",
             # The usage poll writes many credentials' status.usage, a field no other job writes.
             "usage": "Usage"}
KINDS: dict[str, type[Cluster] | type[SendingDomain] | type[SmtpCredential]] = {
    "Cluster": Cluster, "SendingDomain": SendingDomain, "SmtpCredential": SmtpCredential}


def _stop_at_once() -> None:
    """Leadership lost: another replica may reconcile any moment now, so this one must not go on."""
    logging.shutdown()
    os._exit(1)


class Controller:
    def __init__(self, kube: KubeClient, options: Options) -> None:
        self.kube = kube
        self.options = options
        self.applier = Applier(kube)
        self.index = Index()
        self.tables: dict[Key, Table] = {}
        self.known_verifiers: dict[tuple[Key, str], str] = {}  # from the shards found at start
        self.pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="api")
        self.queue: WorkQueue[Job] = WorkQueue(self.handle, options.workers)
        self._timers: dict[Job, asyncio.TimerHandle] = {}
        self._locks: dict[tuple[str, Key], asyncio.Lock] = {}
        self._launch: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None
        self._stats: asyncio.Task[None] | None = None

    # --- the reconcilers' Context ---

    async def io(self, fn: Callable[[*Args], T], *args: *Args) -> T:
        """Run a blocking API call in the bounded pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args))

    @staticmethod
    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def now_text(self) -> str:
        return now_text(self.now())

    async def event(self, regarding: dict[str, Any], type_: str, reason: Reason, note: str) -> None:
        try:
            await self.io(self.kube.event, regarding, type_, reason, note, self.now_text())
        except Exception as error:  # an Event is best effort: never fail a reconcile over it
            log.info("event not posted", extra={"reason": reason, "error": str(error)})

    def enqueue(self, job: Job) -> None:
        self.queue.add(job)

    def schedule(self, job: Job, delay: float) -> None:
        """Queue ``job`` after ``delay``, replacing an earlier schedule of it (periodic checks)."""
        old = self._timers.pop(job, None)
        if old is not None:
            old.cancel()
        self._timers[job] = asyncio.get_running_loop().call_later(delay, self.queue.add, job)

    async def patch_status(self, obj: Resource, status: dict[str, Any]) -> dict[str, Any] | None:
        return await status_write.patch_status(self, obj, status)

    async def patch_and_remember(self, obj: R, status: dict[str, Any], held: MutableMapping[Key, R]) -> None:
        await status_write.patch_and_remember(self, obj, status, held)

    def table(self, ck: Key) -> Table:
        table = self.tables.get(ck)
        if table is None:
            table = self.tables[ck] = Table()
            table.task = asyncio.create_task(table_writer.run(self, ck), name=f"table-{ck[0]}/{ck[1]}")
        return table

    def launch(self, elector: LeaderElector | None) -> None:
        """Start working now, or (with leader election) once this replica leads; until then the watch
        events still fill the index, so a standby that takes over starts warm."""
        async def lead() -> None:
            if elector is not None:
                await elector.acquire()
                self._keeper = asyncio.create_task(elector.keep(_stop_at_once), name="lease")
            await self.start()
        self._launch = asyncio.create_task(lead(), name="launch")

    async def start(self) -> None:
        await startup.sync(self)
        self.queue.start()
        for ck in self.index.clusters:
            self.queue.add(("cluster", ck))
        for key in self.index.domains:
            self.queue.add(("domain", key))
            self.queue.add(("verify", key))
        for key in self.index.creds:
            self.queue.add(("cred", key))
        self._resync = asyncio.create_task(self._resync_loop())
        self._stats = asyncio.create_task(self._stats_loop())

    async def stop(self) -> None:
        for task in (self._launch, self._keeper, self._resync, self._stats):
            if task is not None:
                task.cancel()
        await self.queue.stop()
        for table in self.tables.values():
            if table.task:
                table.task.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync_seconds)
            try:
                await startup.resync(self)
            except Exception as error:  # the next round tries again
                log.warning("resync failed", extra={"error": str(error)})

    async def _stats_loop(self) -> None:
        """API calls so far, by verb, whenever they changed: what the benchmark reads."""
        last: dict[str, int] = {}
        while True:
            await asyncio.sleep(STATS_SECONDS)
            calls = dict(self.kube.calls)
            if calls != last:
                log.info("api calls", extra={"api_calls": calls, "queued": len(self.queue)})
                last = calls

    # --- watch events (called from kopf's event handlers, on the loop) ---

    def on_object(self, kind: str, event_type: str, raw: Mapping[str, Any]) -> None:
        meta = raw.get("metadata", {})
        key: Key = (meta.get("namespace", ""), meta.get("name", ""))
        if kind == "Cluster":
            self._on_cluster(key, event_type, raw)
        elif kind == "SendingDomain":
            self._on_domain(key, event_type, raw)
        elif kind == "SmtpCredential":
            self._on_cred(key, event_type, raw)

    def _on_cluster(self, key: Key, event_type: str, raw: Mapping[str, Any]) -> None:
        old = self.index.clusters.get(key)
        if event_type == "DELETED":
            self.index.clusters.pop(key, None)
            table = self.tables.pop(key, None)
            if table and table.task:
                table.task.cancel()
            self.applier.forget(key[0], f"{key[1]}-mta")
            for token_key in [k for k in self.index.tokens if k[0] == key]:
                del self.index.tokens[token_key]
        else:
            cluster = Cluster.model_validate(raw)
            self.index.clusters[key] = cluster
            if old is not None and old.metadata.generation == cluster.metadata.generation:
                return  # our own status write
        self.queue.add(("cluster", key))
        # Host, ports and mechanisms reach every credential; domains need the SPF include name.
        for cred in self.index.creds_of(key):
            self.queue.add(("cred", cred))
        for domain in self.index.domains_of(key):
            self.queue.add(("domain", domain))

    def _on_domain(self, key: Key, event_type: str, raw: Mapping[str, Any]) -> None:
        old = self.index.domains.get(key)
        if event_type == "DELETED":
            self.index.domains.pop(key, None)
            self.index.dkim.pop(key, None)
            if old is not None:
                self.queue.add(("cluster", self.index.cluster_of(old)))
            return
        domain = SendingDomain.model_validate(raw)
        self.index.domains[key] = domain
        if old is None or old.metadata.generation != domain.metadata.generation:
            self.queue.add(("domain", key))
            if old is None:
                self.queue.add(("verify", key))

    def _on_cred(self, key: Key, event_type: str, raw: Mapping[str, Any]) -> None:
        old_generation = self.index.creds.generation.get(key, -1)
        if event_type == "DELETED":
            old = self.index.creds.get(key)
            ck = self.index.drop_cred(key)
            if ck is not None and ck in self.tables:
                self.tables[ck].remove(key)  # out of the table at the next write, within the debounce
            if old is not None and ck is not None:
                for other in self.index.claimants(ck, old.effective_username):
                    self.queue.add(("cred", other))  # the next claimant may now own the username
                self.queue.add(("cluster-status", ck))
            return
        cred = SmtpCredential.model_validate(raw)
        if old_generation == cred.metadata.generation:
            self.index.creds[key] = cred  # status only: keep the newest body, nothing to do
            return
        self.index.put_cred(cred, raw["metadata"].get("creationTimestamp", ""))
        self.queue.add(("cred", key))
        if old_generation == -1:
            self.queue.add(("cluster-status", self.index.cluster_of(cred)))

    def on_statefulset(self, event_type: str, raw: Mapping[str, Any]) -> None:
        meta = raw.get("metadata", {})
        cluster = meta.get("labels", {}).get("app.kubernetes.io/instance")
        if not cluster:
            return
        ck: Key = (meta.get("namespace", ""), cluster)
        ready = 0 if event_type == "DELETED" else int(raw.get("status", {}).get("readyReplicas") or 0)
        if event_type == "DELETED":
            self.applier.forget(ck[0], meta.get("name", ""))
            self.queue.add(("cluster", ck))
        if self.index.ready_mtas.get(ck) != ready:
            self.index.ready_mtas[ck] = ready
            cluster = self.index.clusters.get(ck)
            # Short of MTAs: a full reconcile asks the ones not ready why (Ready then says it).
            short = cluster is not None and ready < cluster.spec.mtas
            self.queue.add(("cluster" if short else "cluster-status", ck))

    # --- work ---

    async def handle(self, job: Job) -> None:
        kind, key = job
        # Jobs that write the same object's status never interleave (a lost update would undo a condition).
        async with self._locks.setdefault((OBJECT_OF[kind], key), asyncio.Lock()):
            await self._handle(kind, key)

    async def _handle(self, kind: JobKind, key: Key) -> None:
        if kind == "cluster":
            await reconcile_cluster.reconcile(self, key)
        elif kind == "cluster-status":
            await reconcile_cluster.write_status(self, key)
        elif kind == "domain":
            await reconcile_domain.reconcile(self, key)
        elif kind == "verify":
            await reconcile_domain.verify(self, key)
        elif kind == "cred":
            await reconcile_credential.reconcile(self, key)
        elif kind == "cred-status":
            await reconcile_credential.write_status(self, key)
        elif kind == "usage":
            await reconcile_usage.poll(self, key)
