"""Where a Cluster's serving certificate comes from: the user's Secret (read, never written), a cert-manager
Certificate (when its API is served), or the operator-managed CA, renewed before expiry."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from mta_operator import naming
from mta_operator.api import Cluster
from mta_operator.api.reasons import Reason
from mta_operator.keys import managed_tls
from mta_operator.kube.apply import owner_uids
from mta_operator.render import certificate, meta

from .context import Context


@dataclass(frozen=True)
class TlsResult:
    secret_name: str
    ok: bool
    reason: Reason
    message: str


def _pair(secret: dict[str, Any] | None, cert: str = "tls.crt",
          key: str = "tls.key") -> managed_tls.Pair | None:
    data = (secret or {}).get("data") or {}
    if cert not in data or key not in data:
        return None
    return managed_tls.Pair(base64.b64decode(data[cert]).decode(), base64.b64decode(data[key]).decode())


async def ensure(ctx: Context, cluster: Cluster) -> TlsResult:
    ns, name = cluster.metadata.namespace or "", cluster.metadata.name
    tls = cluster.spec.tls
    if tls.secret_name:
        live = await ctx.io(ctx.kube.get, "v1", "Secret", ns, tls.secret_name)
        if _pair(live) is None:
            return TlsResult(tls.secret_name, False, Reason.TLS_SECRET_NOT_FOUND,
                             f"spec.tls.secretName: Secret {tls.secret_name} not found or without "
                             "tls.crt/tls.key")
        return TlsResult(tls.secret_name, True, Reason.USER_SECRET,
                         f"Certificate from Secret {tls.secret_name}")
    if tls.issuer_ref:
        if not await ctx.io(ctx.kube.has_api, "cert-manager.io/v1"):
            return TlsResult(naming.tls(name), False, Reason.CERT_MANAGER_NOT_INSTALLED,
                             "spec.tls.issuerRef needs cert-manager (certificates.cert-manager.io/v1 is not "
                             "served): install cert-manager, or set spec.tls.secretName, or leave spec.tls "
                             "empty for an operator-managed CA")
        await ctx.io(ctx.applier.ensure, certificate.certificate(cluster))
        ready = _pair(await ctx.io(ctx.kube.get, "v1", "Secret", ns, naming.tls(name))) is not None
        return TlsResult(naming.tls(name), ready,
                         Reason.CERT_MANAGER if ready else Reason.CERTIFICATE_PENDING,
                         f"Certificate {naming.tls(name)} from {tls.issuer_ref.kind} {tls.issuer_ref.name}"
                         + ("" if ready else ": waiting for cert-manager to issue it"))
    return await _managed(ctx, cluster)


async def _managed(ctx: Context, cluster: Cluster) -> TlsResult:
    ns, name = cluster.metadata.namespace or "", cluster.metadata.name
    now = ctx.now()
    labels = naming.labels(name, "tls")
    ca_live = await ctx.io(ctx.kube.get, "v1", "Secret", ns, naming.ca(name))
    serving_live = await ctx.io(ctx.kube.get, "v1", "Secret", ns, naming.tls(name))
    for live in (ca_live, serving_live):
        if live is not None and cluster.metadata.uid not in owner_uids(live):
            return TlsResult(naming.tls(name), False, Reason.SECRET_NOT_OWNED,
                             f"Secret {live['metadata']['name']} exists and is not owned by this Cluster: "
                             "delete or rename it")
    ca = _pair(ca_live)
    if ca is None or managed_tls.needs_new_ca(ca, now):
        ca = managed_tls.new_ca(f"mta-operator {ns}/{name} CA", now)
        await ctx.io(ctx.applier.ensure, meta.secret(naming.ca(name), cluster, labels,
                                                     {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem}))
    serving = _pair(serving_live)
    if serving is None or managed_tls.needs_reissue(serving, ca, cluster.spec.hostname, now):
        serving = managed_tls.issue(ca, cluster.spec.hostname, now)
        await ctx.io(ctx.applier.ensure, meta.secret(
            naming.tls(name), cluster, labels,
            {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem, "ca.crt": ca.cert_pem},
            type_="kubernetes.io/tls"))
    return TlsResult(naming.tls(name), True, Reason.OPERATOR_CA,
                     f"Certificate for {cluster.spec.hostname} from the operator's CA "
                     f"(Secret {naming.ca(name)})")
