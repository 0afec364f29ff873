"""Cluster → ServiceAccount, Role, RoleBinding, TLS, relay settings, DKIM bundle, Deployment, Services,
PDB; and its status (MTAs ready/desired, connection details, counts, conditions)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from . import naming, tls_source
from .api import API_VERSION, Cluster
from .apply import NotOwned
from .render import conditions, relay_config, secrets, services, workload
from .state import Key
from .status_write import patch_and_remember

if TYPE_CHECKING:
    from .controller import Controller

RENEW_CHECK_SECONDS = 6 * 3600


def domain_entries(ctl: Controller, ck: Key) -> tuple[list[relay_config.DomainEntry], dict[str, str]]:
    entries, keys = [], {}
    for key in sorted(ctl.index.domains_of(ck)):
        domain = ctl.index.domains[key]
        state = ctl.index.dkim.get(key) if domain.spec.dkim.enabled else None
        entries.append(relay_config.DomainEntry(domain.spec.domain, domain.spec.dkim.selector,
                                                state.algorithm if state else domain.spec.dkim.algorithm,
                                                state is not None))
        if state is not None:
            keys[relay_config.dkim_file_name(domain.spec.domain)] = state.pem
    return entries, keys


async def reconcile(ctl: Controller, ck: Key) -> None:
    cluster = ctl.index.clusters.get(ck)
    if cluster is None:
        return
    conds = _conds(cluster)
    if not any(c["type"] == "Ready" for c in conds):
        await _patch(ctl, cluster, {"observedGeneration": cluster.metadata.generation, "conditions":
                                    conditions.put(conds, "Ready", False, "Reconciling", "Creating the MTAs",
                                                   cluster.metadata.generation, ctl.now())})
    tls = await tls_source.ensure(ctl, cluster)
    entries, keys = domain_entries(ctl, ck)
    settings = relay_config.relay_settings(cluster, entries)
    image = workload.Image(ctl.options.relay_image, ctl.options.image_pull_policy)
    fingerprint = hashlib.sha256("\0".join([relay_config.settings_fingerprint_source(settings),
                                             tls.secret_name]).encode()).hexdigest()[:16]
    wanted = [workload.service_account(cluster), workload.role(cluster), workload.role_binding(cluster),
              secrets.settings_config_map(cluster, relay_config.settings_yaml(settings)),
              secrets.dkim_bundle(cluster, keys),
              services.client_service(cluster), services.headless_service(cluster),
              workload.deployment(cluster, tls.secret_name, fingerprint, image)]
    pdb = services.disruption_budget(cluster)
    problem = None
    try:
        for obj in wanted + ([pdb] if pdb else []):
            await ctl.io(ctl.applier.ensure, obj)
        if pdb is None:
            await ctl.io(ctl.applier.remove, "policy/v1", "PodDisruptionBudget", ck[0], naming.mta(ck[1]),
                         cluster.metadata.uid or "")
    except NotOwned as error:
        problem = ("ChildNotOwned", str(error))
    ctl.table(ck)  # the writer publishes the (possibly empty) table the watcher waits for
    if ctl.tables[ck].manifest_written is None:
        ctl.tables[ck].dirty.set()
    ctl.schedule(("cluster", ck), RENEW_CHECK_SECONDS)  # certificate renewal and drift
    await write_status(ctl, ck, tls, problem)


def _conds(cluster: Cluster) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json", exclude_none=True) for c in cluster.status.conditions] \
        if cluster.status else []


async def write_status(ctl: Controller, ck: Key, tls: tls_source.TlsResult | None = None,
                       problem: tuple[str, str] | None = None) -> None:
    cluster = ctl.index.clusters.get(ck)
    if cluster is None:
        return
    gen = cluster.metadata.generation
    conds = _conds(cluster)
    if tls is not None:
        conds = conditions.put(conds, "TlsReady", tls.ok, tls.reason, tls.message, gen, ctl.now())
    ready_mtas = ctl.index.ready_mtas.get(ck, 0)
    desired = cluster.spec.mtas
    if problem is None and tls is not None and not tls.ok:
        problem = (tls.reason, tls.message)
    if problem is None and conditions.status_of(conds, "TlsReady") == "False":
        old = next(c for c in conds if c["type"] == "TlsReady")
        problem = (old["reason"], old["message"])
    if problem is not None:
        outcome = (False, *problem)
    elif ready_mtas < desired:
        outcome = (False, "MtasNotReady", f"{ready_mtas}/{desired} MTAs ready")
    else:
        outcome = (True, "Ready", f"{ready_mtas}/{desired} MTAs ready")
    before = conditions.status_of(conds, "Ready")
    conds = conditions.put(conds, "Ready", *outcome, gen, ctl.now())
    spec = cluster.spec
    status = {
        "observedGeneration": gen, "conditions": conds,
        "mtas": {"desired": desired, "ready": ready_mtas, "summary": f"{ready_mtas}/{desired}"},
        "connection": {"smtpHost": spec.hostname, "smtpPorts": list(spec.smtp.ports),
                       "httpEndpoint": f"https://{spec.hostname}:{services.HTTPS_PORT}/api/inject/v1"
                       if spec.http.enabled else ""},
        "sendingDomains": len(ctl.index.domains_of(ck)),
        "smtpCredentials": len(ctl.index.creds_of(ck)),
    }
    await _patch(ctl, cluster, status)
    if before != conditions.status_of(conds, "Ready"):
        await ctl.event({"apiVersion": API_VERSION, "kind": "Cluster",
                         "metadata": {"name": ck[1], "namespace": ck[0], "uid": cluster.metadata.uid}},
                        "Normal" if outcome[0] else "Warning", outcome[1], outcome[2])


async def _patch(ctl: Controller, cluster: Cluster, status: dict[str, Any]) -> None:
    await patch_and_remember(ctl, cluster, status, ctl.index.clusters)
