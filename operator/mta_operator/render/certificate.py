"""The cert-manager Certificate of a Cluster whose spec.tls names an issuer: cert-manager writes the
serving certificate into the Secret the MTAs mount."""

from __future__ import annotations

from mta_operator import naming
from mta_operator.api import Cluster

from .meta import Obj, child


def certificate(cluster: Cluster) -> Obj:
    name = cluster.metadata.name
    issuer = cluster.spec.tls.issuer_ref
    assert issuer is not None
    obj = child("cert-manager.io/v1", "Certificate", naming.tls(name), cluster, naming.labels(name, "tls"))
    obj["spec"] = {"secretName": naming.tls(name), "dnsNames": [cluster.spec.hostname],
                   "issuerRef": {"name": issuer.name, "kind": str(issuer.kind), "group": issuer.group},
                   "renewBefore": "720h"}
    return obj
