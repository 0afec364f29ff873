"""SmtpCredential.status.usage: every few seconds, per Cluster, one ``GET /internal/v1/usage`` to each MTA
(peer token, certificate pinned, as ``scale_down.queue_status``), the answers summed per credential
(``usage_statuses``, pure) and only the credentials whose usage changed patched. With thousands of
credentials a poll still costs one request per MTA and one pod listing.

Each MTA reports only what it accepted itself, from counts on its own volume, so the sum is the
cluster's and survives MTA restarts and replacements. An MTA that does not answer keeps counting with its
last answer (its mail was sent all the same); one that is gone for good (scaled down) is remembered until
the operator restarts. The same poll notices MTAs that moved (a new pod IP) and asks for a reconcile, so
the relay settings' ``quotaExchange`` list follows; the MTAs do not wait for it (``mta_relay.usage``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mta_relay import usage
from mta_relay.config import QuotaPeriod
from mta_relay.quota import period_start

from mta_operator import naming
from mta_operator.api import SmtpCredential
from mta_operator.api.smtp_credential import CredentialUsage
from mta_operator.render import relay_config

from . import scale_down
from .context import Context
from .index import Key

POLL_SECONDS = 5.0


@dataclass(frozen=True)
class Counted:
    """What the sum needs of one SmtpCredential (kept per credential, parsed again only when its
    generation changes: the index holds thousands of them as compact JSON)."""

    generation: int | None
    username: str
    period: QuotaPeriod
    quota: int | None  # messages per period; None: no quota


@dataclass
class UsageState:
    """Per Cluster: what the poll needs from the last full reconcile, and what it saw and wrote."""

    token: str = ""
    cert: bytes | None = None
    mtas: dict[str, str] = field(default_factory=dict)  # pod name → IP, as the settings list them
    reports: dict[str, usage.Report] = field(default_factory=dict)  # pod name → its last answer
    counted: dict[Key, Counted] = field(default_factory=dict)
    written: dict[Key, dict[str, Any]] = field(default_factory=dict)  # credential → status.usage written


def counted(cred: SmtpCredential) -> Counted:
    quota = cred.spec.quota
    return Counted(cred.metadata.generation, cred.effective_username, relay_config.quota_period(cred),
                   quota.messages if quota is not None and quota.messages else None)


def usage_statuses(creds: Mapping[Key, Counted], reports: Iterable[usage.Report],
                   now: float) -> dict[Key, dict[str, Any]]:
    """status.usage of each credential from the MTAs' reports: the counts of the current period summed,
    the latest use over all MTAs. A credential no MTA has counted yet is left out (no usage to show)."""
    reports = list(reports)
    found: dict[Key, dict[str, Any]] = {}
    for key, cred in creds.items():
        counts = [r.counts[cred.username] for r in reports if cred.username in r.counts]
        if not counts:
            continue
        start = period_start(cred.period, now)
        sent = sum(c.sent for c in counts if c.start == start)
        last = max(counts, key=lambda c: c.last_used)
        model = CredentialUsage(
            sent=sent, period_start=dt.datetime.fromtimestamp(start, dt.UTC),
            remaining=max(0, cred.quota - sent) if cred.quota is not None else None,
            last_used_time=dt.datetime.fromtimestamp(int(last.last_used), dt.UTC) if last.last_used else None,
            last_used_from=last.last_from or None)
        found[key] = model.model_dump(mode="json", exclude_none=True)
    return found


def changed(wanted: Mapping[Key, dict[str, Any]], written: Mapping[Key, dict[str, Any]]) -> list[Key]:
    return sorted(k for k, v in wanted.items() if written.get(k) != v)


def remember(ctx: Context, ck: Key, token: str, cert: bytes | None, mtas: Mapping[str, str]) -> None:
    """From a full reconcile: the peer token, the serving certificate, the MTAs the settings list. Starts
    the Cluster's poll the first time."""
    state = ctx.index.usage.get(ck)
    if state is None:
        state = ctx.index.usage[ck] = UsageState()
        ctx.enqueue(("usage", ck))
    state.token, state.mtas = token, dict(mtas)
    if cert is not None:
        state.cert = cert


async def poll(ctx: Context, ck: Key) -> None:
    state = ctx.index.usage.get(ck)
    if ck not in ctx.index.clusters or state is None:
        ctx.index.usage.pop(ck, None)
        return
    ctx.schedule(("usage", ck), POLL_SECONDS)
    items = await ctx.io(ctx.kube.list, "v1", "Pod", ck[0], ",".join(
        f"{k}={v}" for k, v in sorted(naming.workload_selector(ck[1]).items())))
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in items
            if p.get("status", {}).get("podIP") and not p["metadata"].get("deletionTimestamp")}
    if pods != state.mtas:
        ctx.enqueue(("cluster", ck))  # an MTA moved or came: the settings list the MTAs for the exchange
    if state.cert is None or not state.token:
        return
    answers = await asyncio.gather(*(ctx.io(_ask, ip, state.token, state.cert) for ip in pods.values()))
    for pod, report in zip(pods, answers, strict=True):
        if report is not None:
            state.reports[report.mta or pod] = report
    if pods and not any(answers):
        ctx.enqueue(("cluster", ck))  # none answered: perhaps a renewed certificate, which a reconcile reads
    keys = [k for k in ctx.index.creds_of(ck) if k in ctx.index.creds]
    for key in keys:
        if key in state.counted and state.counted[key].generation == ctx.index.creds.generation.get(key):
            continue
        cred = ctx.index.creds[key]
        state.counted[key] = counted(cred)
        # First sight (an operator restart): what status already says needs no write.
        if key not in state.written and cred.status is not None and cred.status.usage is not None:
            state.written[key] = cred.status.usage.model_dump(mode="json", exclude_none=True)
    for gone in set(state.counted) - set(keys):
        del state.counted[gone]
        state.written.pop(gone, None)
    wanted = usage_statuses(state.counted, state.reports.values(), ctx.now().timestamp())
    for key in changed(wanted, state.written):
        if key not in ctx.index.creds:
            continue
        await ctx.patch_and_remember(ctx.index.creds[key], {"usage": wanted[key]}, ctx.index.creds)
        state.written[key] = wanted[key]


def _ask(address: str, token: str, cert: bytes) -> usage.Report | None:
    answer = scale_down.fetch_pinned(address, relay_config.HTTP_PORT, usage.USAGE_PATH, cert,
                                     {"Authorization": f"Bearer {token}"})
    if answer is None or answer[0] != 200:
        return None
    try:
        return usage.decode(answer[1])
    except ValueError:
        return None
