"""What a reconciler may ask of the operator's core, and nothing more: the API (``kube``, ``applier``,
both called through ``io`` so a blocking request runs in the bounded pool), the in-memory ``index`` and
credential ``tables``, the run-time ``options``, the clock, Events, status writes, and new work
(``enqueue`` now, ``schedule`` later). The controller (``mta_operator.controller``) satisfies this
``Protocol``; reconcilers never import it, so they can be driven by anything that does, a test included."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Literal, Protocol, TypeVar, TypeVarTuple

from mta_operator.api import Resource
from mta_operator.api.reasons import Reason
from mta_operator.kube.apply import Applier
from mta_operator.kube.client import KubeClient
from mta_operator.options import Options

from .index import Index, Key
from .table import Table

# One unit of work: what to do, and to which object. Kinds that write the same object's status run one
# at a time per object (the controller holds a lock per object).
JobKind = Literal["cluster", "cluster-status", "domain", "verify", "cred", "cred-status", "usage"]
Job = tuple[JobKind, Key]

T = TypeVar("T")
R = TypeVar("R", bound=Resource)
Args = TypeVarTuple("Args")


class Context(Protocol):
    @property
    def kube(self) -> KubeClient: ...

    @property
    def applier(self) -> Applier: ...

    @property
    def index(self) -> Index: ...

    @property
    def options(self) -> Options: ...

    @property
    def tables(self) -> Mapping[Key, Table]:
        """Credential tables by Cluster key, as far as they exist (``table`` makes one)."""

    @property
    def known_verifiers(self) -> Mapping[tuple[Key, str], str]:
        """(Cluster key, username) → password verifier found in the shards at start."""

    def table(self, ck: Key) -> Table:
        """The Cluster's credential table, made (with its writer) on first use."""

    async def io(self, fn: Callable[[*Args], T], *args: *Args) -> T:
        """Run a blocking call (an API request) in the bounded pool."""

    def now(self) -> dt.datetime: ...

    async def event(self, regarding: dict[str, Any], type_: str, reason: Reason, note: str) -> None:
        """Post an Event, best effort: a failure is logged, never raised."""

    def enqueue(self, job: Job) -> None: ...

    def schedule(self, job: Job, delay: float) -> None:
        """Enqueue ``job`` after ``delay``, replacing an earlier schedule of it (periodic checks)."""

    async def patch_status(self, obj: Resource, status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge ``status`` into obj's status unless it already says so; the merged status written, or
        None when nothing was written (no change, or the object is gone)."""

    async def patch_and_remember(self, obj: R, status: dict[str, Any], held: MutableMapping[Key, R]) -> None:
        """``patch_status``, then keep the index's copy (``held``) in step with what was written."""
