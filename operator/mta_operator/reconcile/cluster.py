"""Cluster → ServiceAccount, Role, RoleBinding, TLS, peer token, relay settings, DKIM bundle, StatefulSet,
Services, PDB; the queue hand-off of a scale-down (``scale_down``); the retirement of a Deployment left by
an older release; and the Cluster's status (MTAs ready/desired, connection details, counts, conditions)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mta_relay import config as rc
from prometheus_client.parser import text_string_to_metric_families

from mta_operator import naming
from mta_operator.api import API_VERSION, Cluster, duration_seconds
from mta_operator.api.reasons import ConditionType, Reason
from mta_operator.kube.apply import NotOwned, owner_uids
from mta_operator.render import conditions, relay_config, services, workload
from mta_operator.render import delivery as delivery_render
from mta_operator.render import secrets as secret_objects
from mta_operator.render.conditions import now_text
from mta_operator.render.meta import Obj

from . import scale_down, usage
from . import tls as tls_source
from .context import Context
from .index import Key

RENEW_CHECK_SECONDS = 6 * 3600
EVENTS_CHECK_SECONDS = 60.0
DELIVERY_CHECK_SECONDS = 10.0  # while DeliveryReady is False (Secrets are not watched)
BACKLOG_SECONDS = 600  # a webhook whose oldest event waits longer is reported (WebhookBacklog)
LEGACY_CHECK_SECONDS = 10.0
VOLUME_CHECK_SECONDS = 5.0
PEER_TOKEN_BYTES = 32
QUEUE_DEPTH_METRIC = "mta_queue_depth"  # the relay's gauge; older relays have it too

SPOOL = ConditionType.SPOOL_PERSISTENT
HANDED_OFF = ConditionType.QUEUE_HANDED_OFF
WEBHOOKS = ConditionType.WEBHOOKS_READY
DELIVERY = ConditionType.DELIVERY_READY
LEGACY = ConditionType.LEGACY_DEPLOYMENT_RETIRED


@dataclass
class Observed:
    """What one reconcile learnt besides the objects it applied; ``write_status`` turns it into status."""

    tls: tls_source.TlsResult | None = None
    problem: tuple[Reason, str] | None = None
    handoff: dict[str, Any] = field(default_factory=dict)
    conditions: list[tuple[ConditionType, bool, Reason, str]] = field(default_factory=list)
    busy: Reason | None = None  # a reason the Cluster is not Ready yet although its MTAs are (a scale-down)
    events: dict[str, Any] | None = None  # status.events, when the MTAs were asked


def domain_entries(ctx: Context, ck: Key) -> tuple[list[relay_config.DomainEntry], dict[str, str]]:
    """Domains whose DKIM key does not exist yet are left out: mail from them is refused for the
    seconds until the key exists, never sent unsigned."""
    entries, keys = [], {}
    for key in sorted(ctx.index.domains_of(ck)):
        domain = ctx.index.domains[key]
        state = ctx.index.dkim.get(key) if domain.spec.dkim.enabled else None
        if domain.spec.dkim.enabled and state is None:
            continue
        entries.append(relay_config.DomainEntry(domain.spec.domain, domain.spec.dkim.selector,
                                                state.algorithm if state else domain.spec.dkim.algorithm,
                                                state is not None))
        if state is not None:
            keys[relay_config.dkim_file_name(domain.spec.domain)] = state.pem
    return entries, keys


async def reconcile(ctx: Context, ck: Key) -> None:
    cluster = ctx.index.clusters.get(ck)
    if cluster is None:
        return
    conds = _conds(cluster)
    if not any(c["type"] == ConditionType.READY for c in conds):
        first = conditions.put(conds, ConditionType.READY, False, Reason.RECONCILING, "Creating the MTAs",
                               cluster.metadata.generation, ctx.now())
        await _patch(ctx, cluster, {"observedGeneration": cluster.metadata.generation, "conditions": first})
    seen = Observed(tls=await tls_source.ensure(ctx, cluster))
    assert seen.tls is not None
    name = cluster.metadata.name
    image = workload.Image(ctx.options.relay_image, ctx.options.image_pull_policy)
    try:
        token = await _peer_token(ctx, cluster)
        await _admin_token(ctx, cluster)
        step = await _handoff_step(ctx, cluster, token, seen)
        entries, keys = domain_entries(ctx, ck)
        mtas = await _pods(ctx, ck[0], _selector_text(naming.workload_selector(name)))
        refused = await _check_delivery(ctx, cluster, seen)
        settings = relay_config.relay_settings(cluster, entries, step.section,
                                               relay_config.quota_exchange(mtas.items()), refused)
        # Keys before the settings that name them: a relay never loads settings whose key is missing.
        wanted = [workload.service_account(cluster), workload.role(cluster, seen.tls.secret_name),
                  workload.role_binding(cluster), secret_objects.dkim_bundle(cluster, keys),
                  relay_config.settings_config_map(cluster, relay_config.settings_yaml(settings)),
                  services.client_service(cluster), services.headless_service(cluster),
                  workload.statefulset(cluster, seen.tls.secret_name, image, step.plan.replicas)]
        pdb = services.disruption_budget(cluster)
        for obj in wanted + ([pdb] if pdb else []):
            await ctx.io(ctx.applier.ensure, obj)
        if pdb is None:
            await ctx.io(ctx.applier.remove, "policy/v1", "PodDisruptionBudget", ck[0], naming.mta(name),
                         cluster.metadata.uid or "")
        if step.plan.done:
            await _finish_handoff(ctx, cluster, step.plan, seen)
        await _retire_legacy(ctx, cluster, seen)
        await _check_volumes(ctx, cluster, seen)
        await _diagnose_mtas(ctx, cluster, seen)
        await _check_webhooks(ctx, cluster, token, seen)
        usage.remember(ctx, ck, token, await _serving_certificate(ctx, ck[0], seen), mtas)
    except NotOwned as error:
        seen.problem = (Reason.CHILD_NOT_OWNED, str(error))
    ctx.table(ck)  # the writer publishes the (possibly empty) table the watcher waits for
    if ctx.tables[ck].manifest_written is None:
        ctx.tables[ck].dirty.set()
    ctx.schedule(("cluster", ck), _next_check(ctx, ck, seen))
    await write_status(ctx, ck, seen)


def _next_check(ctx: Context, ck: Key, seen: Observed) -> float:
    if seen.handoff.get("leaving"):
        return scale_down.POLL_SECONDS
    if any(c[0] == DELIVERY and not c[1] for c in seen.conditions):
        return DELIVERY_CHECK_SECONDS  # a smarthost's Secret may appear, a loop be fixed
    cluster = ctx.index.clusters.get(ck)
    if cluster is not None and cluster.spec.events.webhooks:
        return EVENTS_CHECK_SECONDS  # the webhooks' backlog in status
    if ck in ctx.index.mta_problems:
        return VOLUME_CHECK_SECONDS  # MTAs not ready: say why, and notice when they are
    waiting = [c for c in seen.conditions if not c[1] and c[0] in {SPOOL, LEGACY}]
    if waiting:
        return LEGACY_CHECK_SECONDS if any(c[0] == LEGACY for c in waiting) else VOLUME_CHECK_SECONDS
    return RENEW_CHECK_SECONDS  # certificate renewal and drift


async def _peer_token(ctx: Context, cluster: Cluster) -> str:
    return await _generated_token(ctx, cluster, naming.peer, relay_config.PEER_TOKEN_KEY,
                                  secret_objects.peer_secret)


async def _admin_token(ctx: Context, cluster: Cluster) -> str:
    return await _generated_token(ctx, cluster, naming.admin, relay_config.ADMIN_TOKEN_KEY,
                                  secret_objects.admin_secret)


async def _generated_token(ctx: Context, cluster: Cluster, secret_name: Callable[[str], str], key: str,
                           render: Callable[[Cluster, str], Obj]) -> str:
    """Generated once per Cluster and kept in its Secret; remembered so a reconcile costs no read."""
    ck = (cluster.metadata.namespace or "", cluster.metadata.name)
    name = secret_name(ck[1])
    token = ctx.index.tokens.get((ck, name))
    if token is None:
        live = await ctx.io(ctx.kube.get, "v1", "Secret", ck[0], name)
        data = (live or {}).get("data") or {}
        if live is not None and cluster.metadata.uid in owner_uids(live) and key in data:
            token = base64.b64decode(data[key]).decode()
        else:
            token = secrets.token_urlsafe(PEER_TOKEN_BYTES)
        ctx.index.tokens[(ck, name)] = token
    await ctx.io(ctx.applier.ensure, render(cluster, token))
    return token


@dataclass(frozen=True)
class HandoffStep:
    plan: scale_down.Plan
    section: rc.Handoff  # the relay settings' handoff section


async def _handoff_step(ctx: Context, cluster: Cluster, token: str, seen: Observed) -> HandoffStep:
    ns, name = cluster.metadata.namespace or "", cluster.metadata.name
    desired = cluster.spec.mtas
    live = await ctx.io(ctx.kube.get, "apps/v1", "StatefulSet", ns, naming.mta(name))
    running = int(live["spec"]["replicas"]) if live is not None else None
    previous = cluster.status.handoff if cluster.status else None
    if running is None or desired >= running:
        step = HandoffStep(scale_down.Plan(replicas=desired, leaving=()), relay_config.handoff())
        seen.handoff = {"leaving": [], "queued": {}, "startedAt": "",
                        "retainedVolumes": _still_retained(previous, desired)}
        return step
    leaving = range(desired, running)
    names = {i: naming.pod(name, i) for i in range(running)}
    pods = await _pods(ctx, ns, _selector_text(naming.workload_selector(name)))
    peers = [(names[i], pods[names[i]]) for i in range(desired) if names[i] in pods]
    section = relay_config.handoff(leaving=[names[i] for i in leaving], peers=peers)
    started = previous.started_at if previous and previous.started_at else now_text(ctx.now())
    elapsed = (ctx.now() - dt.datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()
    cert = await _serving_certificate(ctx, ns, seen)
    reports: dict[int, scale_down.QueueReport | None] = {}
    if cert is not None:
        asked = await asyncio.gather(*(
            ctx.io(scale_down.queue_status, pods[names[i]], relay_config.HTTP_PORT, token, cert)
            if names[i] in pods else _none() for i in leaving))
        reports = dict(zip(leaving, asked, strict=True))
    # An emptyDir spool cannot be kept: its MTA goes only once it handed everything over.
    timeout = math.inf if cluster.spec.queue.storage.ephemeral else duration_seconds(
        cluster.spec.queue.handoff_timeout)
    plan = scale_down.plan(desired, running, reports, elapsed, timeout)
    status_names = {i: names[i] for i in leaving}
    seen.handoff = {"leaving": [] if plan.done else [names[i] for i in leaving],
                    "queued": {} if plan.done else {names[i]: n for i, n in plan.queued.items()
                                                    if n is not None},
                    "startedAt": "" if plan.done else started,
                    "retainedVolumes": _still_retained(previous, desired)}
    if not plan.done:
        seen.busy = Reason.SCALING_DOWN
        seen.conditions.append((HANDED_OFF, False, Reason.HANDING_OFF,
                                f"Scaling down to {desired} MTAs: handing queued mail to the MTAs that stay ("
                                f"{scale_down.summary(status_names, plan.queued)})"))
    return HandoffStep(plan, section)


async def _none() -> None:
    return None


async def _check_delivery(ctx: Context, cluster: Cluster, seen: Observed) -> list[delivery_render.Refusal]:
    """DeliveryReady: the smarthosts' Secrets and loops back into the cluster (``render.delivery``
    decides; this gathers what exists). Refused smarthosts are left out of the settings."""
    hosts = delivery_render.smarthosts(cluster)
    if not hosts:
        seen.conditions.append((DELIVERY, True, Reason.ROUTES_ACCEPTED,
                                f"No smarthosts; {len(cluster.spec.delivery.routes)} routes"))
        return []
    ns = cluster.metadata.namespace or ""
    secrets: dict[str, list[str] | None] = {}
    for secret in delivery_render.secret_dirs(cluster):
        live = await ctx.io(ctx.kube.get, "v1", "Secret", ns, secret)
        secrets[secret] = None if live is None else list(live.get("data") or {})
    service = await ctx.io(ctx.kube.get, "v1", "Service", ns, naming.mta(cluster.metadata.name))
    addresses = [ip for ip in ((service or {}).get("spec") or {}).get("clusterIPs") or [] if ip != "None"]
    refused = delivery_render.refusals(cluster, secrets, addresses)
    loops = [r for r in refused if r.reason is Reason.SMARTHOST_LOOP]
    if refused:
        reason = Reason.SMARTHOST_LOOP if loops else Reason.SMARTHOST_SECRET_NOT_FOUND
        seen.conditions.append((DELIVERY, False, reason, "; ".join(r.message for r in refused)))
        if loops and seen.problem is None:
            seen.problem = (Reason.SMARTHOST_LOOP, "; ".join(r.message for r in loops))
    else:
        seen.conditions.append((DELIVERY, True, Reason.ROUTES_ACCEPTED,
                                f"{len(hosts)} smarthosts; {len(cluster.spec.delivery.routes)} routes"))
    return refused


async def _check_webhooks(ctx: Context, cluster: Cluster, token: str, seen: Observed) -> None:
    """WebhooksReady and status.events: each webhook's Secret, and its backlog on the MTAs."""
    hooks = cluster.spec.events.webhooks
    if not hooks:
        seen.conditions.append((WEBHOOKS, True, Reason.NO_WEBHOOKS,
                                "No webhooks: events go to the MTAs' logs and stores (kubectl mta messages)"))
        seen.events = {"webhooks": [], "checkedAt": ""}
        return
    ns = cluster.metadata.namespace or ""
    missing = []
    for i, hook in enumerate(hooks):
        live = await ctx.io(ctx.kube.get, "v1", "Secret", ns, hook.secret_ref.name)
        if live is None or hook.secret_ref.key not in (live.get("data") or {}):
            missing.append(f"spec.events.webhooks[{i}].secretRef: Secret {hook.secret_ref.name!r} "
                           + ("does not exist" if live is None else f"has no key {hook.secret_ref.key!r}"))
    pods = await _pods(ctx, ns, _selector_text(naming.workload_selector(cluster.metadata.name)))
    cert = await _serving_certificate(ctx, ns, seen)
    reports = [] if cert is None else [r for r in await asyncio.gather(*(
        ctx.io(scale_down.queue_status, ip, relay_config.HTTP_PORT, token, cert) for ip in pods.values()))
        if r is not None]
    backlog = scale_down.webhook_backlog(reports)
    counts = {h.name: backlog.get(h.name, (0, 0.0, 0)) for h in hooks}
    seen.events = {"checkedAt": now_text(ctx.now()), "webhooks": [
        {"name": name, "pending": pending, "oldestPendingSeconds": int(oldest), "dropped": dropped}
        for name, (pending, oldest, dropped) in counts.items()]}

    def said(name: str) -> str:
        pending, oldest, dropped = counts[name]
        return (f"{name}: {pending} events waiting" + (f", the oldest for {int(oldest)} s" if pending else "")
                + (f", {dropped} dropped (outbox full)" if dropped else ""))
    late = [name for name, (_, oldest, _) in counts.items() if oldest > BACKLOG_SECONDS]
    if missing:
        seen.conditions.append((WEBHOOKS, False, Reason.WEBHOOK_SECRET_NOT_FOUND, "; ".join(missing)))
    elif late:
        seen.conditions.append((WEBHOOKS, False, Reason.WEBHOOK_BACKLOG, "; ".join(map(said, late))))
    else:
        seen.conditions.append((WEBHOOKS, True, Reason.WEBHOOKS_DELIVERING, "; ".join(map(said, counts))
                                + f" ({len(reports)}/{len(pods)} MTAs answered)"))


def _still_retained(previous: Any, desired: int) -> list[dict[str, Any]]:
    """Retained volumes whose MTA has not come back: one that has (ordinal < desired) was reattached by
    the StatefulSet and its mail is that MTA's queue again."""
    kept = previous.retained_volumes if previous else []
    return [v.model_dump(exclude_none=True) for v in kept if int(v.claim.rsplit("-", 1)[1]) >= desired]


async def _finish_handoff(ctx: Context, cluster: Cluster, plan: scale_down.Plan, seen: Observed) -> None:
    """The StatefulSet shrank: delete the volumes that were reported empty, keep (and list) the rest."""
    ns, name = cluster.metadata.namespace or "", cluster.metadata.name
    retained = list(seen.handoff.get("retainedVolumes", []))
    for ordinal in plan.leaving:
        claim = naming.spool_claim(name, ordinal)
        queued = plan.queued.get(ordinal)
        if queued == 0:
            if not cluster.spec.queue.storage.ephemeral:
                await ctx.io(ctx.kube.delete, "v1", "PersistentVolumeClaim", ns, claim)
        else:
            retained = [v for v in retained if v["claim"] != claim]
            retained.append({"claim": claim, "messages": queued} if queued is not None else {"claim": claim})
    seen.handoff["retainedVolumes"] = retained
    await ctx.event(_ref(cluster), "Normal" if not plan.timed_out else "Warning",
                    Reason.SCALED_DOWN if not plan.timed_out else Reason.HANDOFF_TIMED_OUT,
                    f"Scaled down to {cluster.spec.mtas} MTAs"
                    + ("" if not plan.timed_out else f"; volumes kept with mail: "
                       f"{', '.join(v['claim'] for v in retained)}"))


async def _pods(ctx: Context, namespace: str, selector: str) -> dict[str, str]:
    """Pod name → pod IP of the running, not deleted pods matching the label ``selector``."""
    items = await ctx.io(ctx.kube.list, "v1", "Pod", namespace, selector)
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in items
            if p.get("status", {}).get("podIP") and not p["metadata"].get("deletionTimestamp")}


def _selector_text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


async def _serving_certificate(ctx: Context, namespace: str, seen: Observed) -> bytes | None:
    if seen.tls is None or not seen.tls.ok:
        return None
    live = await ctx.io(ctx.kube.get, "v1", "Secret", namespace, seen.tls.secret_name)
    data = (live or {}).get("data") or {}
    return base64.b64decode(data["tls.crt"]) if "tls.crt" in data else None


async def _retire_legacy(ctx: Context, cluster: Cluster, seen: Observed) -> None:
    """A Deployment of MTAs from an older release (emptyDir spool) is left running, out of the Services,
    until its pods' queues are empty, then deleted: its mail is delivered, not lost with the pods."""
    ns, name = cluster.metadata.namespace or "", cluster.metadata.name
    live = await ctx.io(ctx.kube.get, "apps/v1", "Deployment", ns, naming.mta(name))
    if live is None or cluster.metadata.uid not in owner_uids(live):
        return
    legacy = await _pods(ctx, ns, f"{_selector_text(naming.pod_selector(name))},!{naming.LAYOUT_LABEL}")
    cert = await _serving_certificate(ctx, ns, seen)
    depths = await asyncio.gather(*(ctx.io(_legacy_depth, ip, cert) for ip in legacy.values())) \
        if cert is not None else [None] * len(legacy)
    if all(d == 0 for d in depths):
        await ctx.io(ctx.kube.delete, "apps/v1", "Deployment", ns, naming.mta(name))
        ctx.applier.forget(ns, naming.mta(name))
        seen.conditions.append((LEGACY, True, Reason.RETIRED, "The MTAs of the previous release delivered "
                                "their queue and were removed"))
        await ctx.event(_ref(cluster), "Normal", Reason.LEGACY_DEPLOYMENT_RETIRED,
                        f"Deployment {naming.mta(name)} from the previous release had an empty queue and was "
                        "removed; the StatefulSet's MTAs serve alone")
        return
    waiting = ", ".join(f"{pod}: {'not answering' if d is None else f'{d} messages'}"
                        for pod, d in zip(legacy, depths, strict=True))
    seen.conditions.append((LEGACY, False, Reason.DELIVERING_QUEUE,
                            f"Deployment {naming.mta(name)} from the previous release takes no new mail and "
                            f"is removed once its queue is delivered ({waiting})"))


def _legacy_depth(address: str, cert_pem: bytes | None) -> int | None:
    """The queue depth a relay of any release exports on /metrics (pinned TLS, as scale_down)."""
    if cert_pem is None:
        return None
    answer = scale_down.fetch_pinned(address, relay_config.HTTP_PORT, "/metrics", cert_pem, headers={})
    if answer is None or answer[0] != 200:
        return None
    for family in text_string_to_metric_families(answer[1].decode()):
        if family.name == QUEUE_DEPTH_METRIC:
            return int(sum(sample.value for sample in family.samples))
    return None


async def _check_volumes(ctx: Context, cluster: Cluster, seen: Observed) -> None:
    ns, name = cluster.metadata.namespace or "", cluster.metadata.name
    storage = cluster.spec.queue.storage
    if storage.ephemeral:
        seen.conditions.append((SPOOL, False, Reason.EPHEMERAL_SPOOL,
                                "spec.queue.storage.ephemeral is true: each MTA's queue is an emptyDir, and "
                                "mail queued on an MTA is lost when its pod goes (rollout, drain, eviction)"))
        return
    class_name = storage.storage_class_name
    if class_name and await ctx.io(ctx.kube.get, "storage.k8s.io/v1", "StorageClass", "", class_name) is None:
        seen.conditions.append((SPOOL, False, Reason.STORAGE_CLASS_NOT_FOUND,
                                f"spec.queue.storage.storageClassName: StorageClass {class_name} does not "
                                "exist; the MTAs cannot start without their volumes"))
        return
    claims = await ctx.io(ctx.kube.list, "v1", "PersistentVolumeClaim", ns,
                          _selector_text(naming.labels(name, "spool")))
    wanted = {naming.spool_claim(name, i) for i in range(cluster.spec.mtas)}
    pending = sorted(c["metadata"]["name"] for c in claims if c["metadata"]["name"] in wanted
                     and c.get("status", {}).get("phase") != "Bound")
    if pending:
        seen.conditions.append((SPOOL, False, Reason.VOLUME_NOT_BOUND,
                                f"PersistentVolumeClaim {', '.join(pending)} not bound yet: the MTA waits "
                                "for its volume (check the StorageClass and its provisioner)"))
        return
    seen.conditions.append((SPOOL, True, Reason.VOLUME_PER_MTA,
                            "Each MTA's queue is on its own PersistentVolumeClaim (spool-<pod>), kept when "
                            "the pod goes"))


# What a failing /readyz check of the relay means, for the Cluster's Ready message.
READY_CHECKS = {"spool": "spool not writable or full", "config": "config not loaded", "tls": "no certificate",
                "not_draining": "shutting down", "not_leaving": "handing its queue over"}


async def _diagnose_mtas(ctx: Context, cluster: Cluster, seen: Observed) -> None:
    """While MTAs are not ready, ask each one that runs why (its /readyz), so Ready says it."""
    ck = (cluster.metadata.namespace or "", cluster.metadata.name)
    if ctx.index.ready_mtas.get(ck, 0) >= cluster.spec.mtas:
        ctx.index.mta_problems.pop(ck, None)
        return
    items = await ctx.io(ctx.kube.list, "v1", "Pod", ck[0], _selector_text(naming.workload_selector(ck[1])))
    waiting = {p["metadata"]["name"]: p["status"]["podIP"] for p in items
               if p.get("status", {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
               and not any(c["type"] == ConditionType.READY and c["status"] == "True"
                           for c in p["status"].get("conditions") or [])}
    cert = await _serving_certificate(ctx, ck[0], seen) if waiting else None
    notes = []
    for pod, ip in sorted(waiting.items()):
        answer = await ctx.io(scale_down.fetch_pinned, ip, relay_config.HTTP_PORT, "/readyz", cert, {}) \
            if cert is not None else None
        notes.append(f"{pod}: {_readiness_note(answer)}")
    ctx.index.mta_problems[ck] = "; ".join(notes)


def _readiness_note(answer: tuple[int, bytes] | None) -> str:
    if answer is None:
        return "not answering yet"
    try:
        checks = json.loads(answer[1])
    except ValueError:
        return f"readiness answered {answer[0]}"
    failing = [READY_CHECKS.get(name, name) for name, ok in checks.items() if name != "ready" and ok is False]
    return ", ".join(failing) or "starting"


def _ref(cluster: Cluster) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Cluster",
            "metadata": {"name": cluster.metadata.name, "namespace": cluster.metadata.namespace,
                         "uid": cluster.metadata.uid}}


def _conds(cluster: Cluster) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json", exclude_none=True) for c in cluster.status.conditions] \
        if cluster.status else []


async def write_status(ctx: Context, ck: Key, seen: Observed | None = None) -> None:
    cluster = ctx.index.clusters.get(ck)
    if cluster is None:
        return
    status_only = seen is None
    seen = seen or Observed()
    gen = cluster.metadata.generation
    conds = _conds(cluster)
    tls = seen.tls
    if tls is not None:
        conds = conditions.put(conds, ConditionType.TLS_READY, tls.ok, tls.reason, tls.message, gen,
                               ctx.now())
    for type_, ok, reason, message in seen.conditions:
        conds = conditions.put(conds, type_, ok, reason, message, gen, ctx.now())
    handoff = seen.handoff
    if handoff and not handoff.get("leaving") and conditions.status_of(conds, HANDED_OFF) is not None \
            and not any(c[0] == HANDED_OFF for c in seen.conditions):
        retained = handoff.get("retainedVolumes", [])
        conds = conditions.put(conds, HANDED_OFF, not retained,
                               Reason.HANDOFF_TIMED_OUT if retained else Reason.NOTHING_LEFT,
                               _retained_message(retained) if retained
                               else "No MTA is being removed; every removed MTA handed its queue over",
                               gen, ctx.now())
    ready_mtas = ctx.index.ready_mtas.get(ck, 0)
    desired = cluster.spec.mtas
    held = cluster.status.handoff.leaving if cluster.status else []
    leaving = handoff.get("leaving") if handoff else held
    busy = seen.busy or (Reason.SCALING_DOWN if leaving else None)
    problem = seen.problem
    if problem is None and tls is not None and not tls.ok:
        problem = (tls.reason, tls.message)
    if problem is None:
        problem = _held_problem(conds, status_only)
    if problem is not None:
        outcome = (False, *problem)
    elif ready_mtas < desired and (volume := _volume_problem(conds)) is not None:
        outcome = (False, *volume)
    elif ready_mtas < desired:
        notes = ctx.index.mta_problems.get(ck)
        outcome = (False, Reason.MTAS_NOT_READY,
                   f"{ready_mtas}/{desired} MTAs ready" + (f"; {notes}" if notes else ""))
    elif busy is not None:
        outcome = (False, busy, f"{ready_mtas}/{desired} MTAs ready; {len(leaving or [])} MTAs handing their "
                                "queue over")
    else:
        outcome = (True, Reason.READY, f"{ready_mtas}/{desired} MTAs ready")
    before = conditions.status_of(conds, ConditionType.READY)
    conds = conditions.put(conds, ConditionType.READY, *outcome, gen, ctx.now())
    spec = cluster.spec
    status: dict[str, Any] = {
        "observedGeneration": gen, "conditions": conds,
        "mtas": {"desired": desired, "ready": ready_mtas, "summary": f"{ready_mtas}/{desired}"},
        "connection": {"smtpHost": spec.hostname, "smtpPorts": list(spec.smtp.ports),
                       "implicitTlsPorts": list(spec.smtp.implicit_tls_ports),
                       "httpEndpoint": f"https://{spec.hostname}:{services.HTTPS_PORT}/api/inject/v1"
                       if spec.http.enabled else ""},
        "sendingDomains": len(ctx.index.domains_of(ck)),
        "smtpCredentials": len(ctx.index.creds_of(ck)),
    }
    if handoff:
        status["handoff"] = handoff
    if seen.events is not None:
        status["events"] = seen.events
    await _patch(ctx, cluster, status)
    if before != conditions.status_of(conds, ConditionType.READY):
        await ctx.event(_ref(cluster), "Normal" if outcome[0] else "Warning", outcome[1], outcome[2])


def _held_problem(conds: list[dict[str, Any]], status_only: bool) -> tuple[Reason, str] | None:
    """A problem only a full reconcile finds, kept by the status writes in between: a failing TlsReady, and
    (in a status-only write, which applies nothing) a child the operator does not own."""
    tls = next((c for c in conds if c["type"] == ConditionType.TLS_READY), None)
    if tls and tls["status"] == "False" and (reason := Reason.parse(tls["reason"])) is not None:
        return reason, tls["message"]
    ready = next((c for c in conds if c["type"] == ConditionType.READY), None)
    if status_only and ready and ready["status"] == "False" and ready["reason"] == Reason.CHILD_NOT_OWNED:
        return Reason.CHILD_NOT_OWNED, ready["message"]
    return None


def _volume_problem(conds: list[dict[str, Any]]) -> tuple[Reason, str] | None:
    """A spool volume the MTAs wait for explains why they are not ready better than the count does."""
    spool = next((c for c in conds if c["type"] == SPOOL), None)
    reason = Reason.parse(spool["reason"]) if spool and spool["status"] == "False" else None
    if spool and (reason is Reason.STORAGE_CLASS_NOT_FOUND or reason is Reason.VOLUME_NOT_BOUND):
        return reason, spool["message"]
    return None


def _retained_message(retained: list[dict[str, Any]]) -> str:
    kept = ", ".join(f"{v['claim']} ({v.get('messages', 'an unknown number of')} messages)"
                     for v in retained)
    return (f"Volumes of removed MTAs still hold mail: {kept}. Nothing was dropped: scaling back up to "
            f"include their MTAs brings them back with these volumes, and their mail is delivered")


async def _patch(ctx: Context, cluster: Cluster, status: dict[str, Any]) -> None:
    await ctx.patch_and_remember(cluster, status, ctx.index.clusters)
