"""How clients reach the MTAs: the client Service, the headless Service (one DNS record per Ready MTA,
the DNS rotation) and the PodDisruptionBudget that keeps one MTA serving during drains."""

from __future__ import annotations

from mta_operator import naming
from mta_operator.api import Cluster

from .meta import Obj, child
from .relay_config import HTTP_PORT, container_port, smtp_ports

HTTPS_PORT = 8443
EXTERNAL_DNS = "external-dns.alpha.kubernetes.io/hostname"


def _ports(cluster: Cluster) -> list[Obj]:
    ports = [{"name": name, "port": p, "targetPort": container_port(p), "protocol": "TCP"}
             for name, p in smtp_ports(cluster)]
    if cluster.spec.http.enabled:
        ports.append({"name": "https", "port": HTTPS_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"})
    return ports


def _publish_on_headless(cluster: Cluster) -> bool:
    # A ClusterIP Service has no outside address: external-dns publishes the Ready MTAs' pod IPs instead.
    return cluster.spec.service.type == "ClusterIP" and EXTERNAL_DNS in cluster.spec.service.annotations


def client_service(cluster: Cluster) -> Obj:
    name = cluster.metadata.name
    svc = cluster.spec.service
    annotations = dict(svc.annotations)
    if _publish_on_headless(cluster):
        annotations.pop(EXTERNAL_DNS)
    obj = child("v1", "Service", naming.mta(name), cluster, naming.labels(name, "service"), annotations)
    spec: Obj = {"type": str(svc.type), "selector": naming.workload_selector(name), "ports": _ports(cluster)}
    if svc.external_traffic_policy:
        spec["externalTrafficPolicy"] = str(svc.external_traffic_policy)
    obj["spec"] = spec
    return obj


def headless_service(cluster: Cluster) -> Obj:
    name = cluster.metadata.name
    annotations = ({EXTERNAL_DNS: cluster.spec.service.annotations[EXTERNAL_DNS]}
                   if _publish_on_headless(cluster) else None)
    obj = child("v1", "Service", naming.headless(name), cluster, naming.labels(name, "dns-rotation"),
                annotations)
    obj["spec"] = {"clusterIP": "None", "publishNotReadyAddresses": False,
                   "selector": naming.workload_selector(name), "ports": _ports(cluster)}
    return obj


def disruption_budget(cluster: Cluster) -> Obj | None:
    """Only with more than one MTA: a budget over a single replica would block every node drain."""
    if cluster.spec.mtas < 2:
        return None
    name = cluster.metadata.name
    obj = child("policy/v1", "PodDisruptionBudget", naming.mta(name), cluster, naming.labels(name, "relay"))
    obj["spec"] = {"maxUnavailable": 1, "selector": {"matchLabels": naming.workload_selector(name)}}
    return obj
