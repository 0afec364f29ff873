"""SendingDomain → its DKIM key Secret (generated once, never silently replaced), the DNS records to
publish in status, and the timed DNS check that sets Verified."""

from __future__ import annotations

import base64
from typing import Any

from mta_operator import naming
from mta_operator.api import API_VERSION, SendingDomain
from mta_operator.api.reasons import ConditionType, Reason
from mta_operator.keys import dkim as dkim_keys
from mta_operator.keys import dns_check
from mta_operator.kube.apply import owner_uids
from mta_operator.kube.client import ApiError
from mta_operator.render import conditions, dns_records, relay_config, secrets

from .context import Context
from .index import DkimState, Key


class Refused(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def _key(ctx: Context, domain: SendingDomain) -> DkimState:
    ns, name = domain.metadata.namespace or "", naming.dkim_key(domain.metadata.name)
    live = await ctx.io(ctx.kube.get, "v1", "Secret", ns, name)
    if live is None:
        pem = await ctx.io(dkim_keys.generate, domain.spec.dkim.algorithm, domain.spec.dkim.key_size)
        try:
            await ctx.io(ctx.kube.create, secrets.dkim_key_secret(domain, pem))
        except ApiError as error:
            if error.status != 409:
                raise
            live = await ctx.io(ctx.kube.get, "v1", "Secret", ns, name)  # a restart raced us: use it
    if live is not None:
        if domain.metadata.uid not in owner_uids(live):
            raise Refused(Reason.DKIM_SECRET_NOT_OWNED, f"Secret {name} exists and is not owned by this "
                                                "SendingDomain: delete or rename it")
        pem = base64.b64decode((live.get("data") or {}).get("private.pem", "")).decode()
    algorithm = dkim_keys.algorithm_of(pem)
    if algorithm is None:
        raise Refused(Reason.DKIM_KEY_UNREADABLE, f"Secret {name} has no readable RSA or Ed25519 key in "
                                           "private.pem: delete it to generate a new key")
    return DkimState(pem, algorithm)


def _conds(domain: SendingDomain) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json", exclude_none=True) for c in domain.status.conditions] \
        if domain.status else []


async def reconcile(ctx: Context, key: Key) -> None:
    domain = ctx.index.domains.get(key)
    if domain is None:
        return
    ck = ctx.index.cluster_of(domain)
    cluster = ctx.index.clusters.get(ck)
    gen = domain.metadata.generation
    conds = _conds(domain)
    if not any(c["type"] == ConditionType.READY for c in conds):
        conds = conditions.put(conds, ConditionType.READY, False, Reason.RECONCILING, "", gen, ctx.now())
        conds = conditions.put(conds, ConditionType.VERIFIED, None, Reason.NOT_CHECKED, "DNS not checked yet",
                               gen, ctx.now())
        await _patch(ctx, domain, {"observedGeneration": gen, "conditions": conds})
    records: list[dict[str, Any]] = []
    try:
        if cluster is None:
            raise Refused(Reason.CLUSTER_NOT_FOUND, f"Cluster {ck[1]} not found in namespace {ck[0]}")
        txt = None
        if domain.spec.dkim.enabled:
            state = await _key(ctx, domain)
            ctx.index.dkim[key] = state
            txt = dkim_keys.txt_value(state.pem)
            if state.algorithm != domain.spec.dkim.algorithm:
                raise Refused(Reason.DKIM_KEY_MISMATCH,
                              f"the key in Secret {naming.dkim_key(key[1])} is {state.algorithm}, spec.dkim."
                              f"algorithm is {domain.spec.dkim.algorithm}; the published key keeps signing. "
                              "Delete the Secret to generate a new key (then publish the new DKIM record)")
        else:
            ctx.index.dkim.pop(key, None)
        wanted = dns_records.records(domain, relay_config.spf_include(cluster), txt)
        old = {(r.purpose, r.name, r.value): r.verified for r in (domain.status.dns_records
                                                                 if domain.status else [])}
        records = [r.model_copy(update={"verified": old.get((r.purpose, r.name, r.value), False)})
                   .model_dump(mode="json") for r in wanted]
        outcome = (True, Reason.RECONCILED, f"Signing for Cluster {ck[1]}; publish status.dnsRecords")
    except Refused as refused:
        outcome = (False, refused.reason, str(refused))
    ctx.enqueue(("cluster", ck))  # domains and keys enter the relay settings
    before = conditions.status_of(conds, ConditionType.READY)
    conds = conditions.put(conds, ConditionType.READY, *outcome, gen, ctx.now())
    status: dict[str, Any] = {"observedGeneration": gen, "conditions": conds,
                              "dkimSecretName": naming.dkim_key(key[1]) if domain.spec.dkim.enabled else ""}
    if records:
        status["dnsRecords"] = records
    await _patch(ctx, domain, status)
    if before != conditions.status_of(conds, ConditionType.READY):
        await ctx.event(_ref(domain), "Normal" if outcome[0] else "Warning", outcome[1], outcome[2])
    if records:
        ctx.enqueue(("verify", key))


async def verify(ctx: Context, key: Key) -> None:
    """Check the published records; runs again every dns_check_seconds while the domain exists."""
    domain = ctx.index.domains.get(key)
    if domain is None:
        return
    ctx.schedule(("verify", key), ctx.options.dns_check_seconds)
    wanted = domain.status.dns_records if domain.status else []
    if not wanted:
        return
    res = dns_check.resolver(ctx.options.dns_nameserver)
    found = await ctx.io(dns_check.txt, res, [r.name for r in wanted])
    checked, missing = dns_records.verify(wanted, found)
    conds = _conds(domain)
    before = conditions.status_of(conds, ConditionType.VERIFIED)
    ok = not missing
    conds = conditions.put(conds, ConditionType.VERIFIED, ok,
                           Reason.RECORDS_FOUND if ok else Reason.RECORDS_MISSING,
                           "All DNS records are published" if ok else missing, domain.metadata.generation,
                           ctx.now())
    await _patch(ctx, domain, {"conditions": conds,
                               "dnsRecords": [r.model_dump(mode="json") for r in checked]})
    if before != conditions.status_of(conds, ConditionType.VERIFIED):
        await ctx.event(_ref(domain), "Normal" if ok else "Warning",
                        Reason.VERIFIED if ok else Reason.NOT_VERIFIED,
                        missing or "All DNS records are published")


def _ref(domain: SendingDomain) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "SendingDomain",
            "metadata": {"name": domain.metadata.name, "namespace": domain.metadata.namespace,
                         "uid": domain.metadata.uid}}


async def _patch(ctx: Context, domain: SendingDomain, status: dict[str, Any]) -> None:
    await ctx.patch_and_remember(domain, status, ctx.index.domains)
