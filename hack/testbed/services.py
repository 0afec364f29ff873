"""Service addresses on the test host: a userspace stand-in for kube-proxy, and cluster DNS at its
Service address.

There is no kube-proxy on the test bed. Under ``python -m testbed run`` SERVICE_CIDR is a local route on
``lo`` (netns.py), like the pod CIDR, so a ClusterIP is an address a process can bind. The pod runner
runs ``Proxy``: while a Service has ready endpoints it listens on each of its TCP ports at the ClusterIP
and forwards every connection to one ready endpoint (round robin) at the EndpointSlice's port (the
resolved targetPort), as kube-proxy's old userspace mode did; a Service without ready endpoints refuses
connections, as kube-proxy rejects them. ``default/kubernetes`` leads to the API server: its endpoint
would be the server's loopback address, which an EndpointSlice cannot hold (the API server runs with
``--endpoint-reconciler-type=none``), and in-cluster clients such as kopf dial
``https://kubernetes.default.svc``. CoreDNS also answers at CLUSTER_DNS:53 there (cluster.py), the
address kubelet writes into a ClusterFirst pod's resolv.conf (podspec.resolv_conf). Outside the test host
(``testbed up`` in the machine's own namespace) neither exists and pods keep the machine's resolv.conf.

What this does not reproduce: UDP and SCTP ports, NodePorts and load balancers, sessionAffinity,
internal/external traffic policies and topology; the endpoint sees the proxy's connection, not the
client's source address (as with kube-proxy's userspace mode, or SNAT).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

from kubernetes import client

log = logging.getLogger("services")

SERVICE_CIDR = "10.96.0.0/16"  # the API server's --service-cluster-ip-range
CLUSTER_DNS = "10.96.0.10"  # the conventional kube-dns ClusterIP (kubelet's --cluster-dns)
SYNC = 1.0  # seconds between two reads of Services and EndpointSlices
Backend = tuple[str, int]
Key = tuple[str, int]  # (ClusterIP, Service port)


def routed_here(cidr: str) -> bool:
    """Whether ``cidr``'s first address can be bound here: the range is a local route (inside the test
    host's network namespace, see netns.py)."""
    probe = str(next(ipaddress.ip_network(cidr).hosts()))
    with socket.socket() as s:
        try:
            s.bind((probe, 0))
        except OSError:
            return False
    return True


def local() -> bool:
    """Whether ClusterIPs are bindable here (the test host's namespace, see netns.py)."""
    return routed_here(SERVICE_CIDR)


def backends(services: list[dict[str, Any]], slices: list[dict[str, Any]], api_server: Backend
             ) -> dict[Key, list[Backend]]:
    """(ClusterIP, port) -> the ready endpoints (address, target port) of every TCP Service port that
    has any; Services and EndpointSlices as the API's JSON; ``api_server`` is the kubernetes Service's."""
    by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in slices:
        if s.get("addressType") != "IPv4":
            continue
        owner = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if owner:
            by_service.setdefault((s["metadata"]["namespace"], owner), []).append(s)
    out: dict[Key, list[Backend]] = {}
    for svc in services:
        ip = svc["spec"].get("clusterIP")
        if not ip or ip == "None":
            continue
        for port in svc["spec"].get("ports") or []:
            if port.get("protocol", "TCP") != "TCP":
                continue
            found = [(address, target["port"])
                     for s in by_service.get((svc["metadata"]["namespace"], svc["metadata"]["name"]), [])
                     for target in s.get("ports") or []
                     if (target.get("name") or "") == (port.get("name") or "")
                     and target.get("protocol", "TCP") == "TCP"
                     for endpoint in s.get("endpoints") or []
                     if (endpoint.get("conditions") or {}).get("ready") is not False
                     for address in endpoint.get("addresses") or []]
            if (svc["metadata"]["namespace"], svc["metadata"]["name"]) == ("default", "kubernetes"):
                found = found or [api_server]
            if found:
                out[(ip, port["port"])] = sorted(set(found))
    return out


class Proxy:
    """Listens on the ClusterIPs of Services with ready endpoints and forwards to those endpoints."""

    def __init__(self, api_client: client.ApiClient, api_server: Backend) -> None:
        self.api_server = api_server
        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.serialize = api_client.sanitize_for_serialization
        self.servers: dict[Key, asyncio.Server] = {}
        self.routes: dict[Key, list[Backend]] = {}
        self.turns: dict[Key, Iterator[int]] = {}
        self.failed: set[Key] = set()  # keys whose address could not be bound (logged once)

    def start(self, stopping: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=lambda: asyncio.run(self._run(stopping)), name="service-proxy",
                                  daemon=True)
        thread.start()
        return thread

    async def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                await self._sync()
            except Exception:
                log.exception("service proxy sync failed")
            await asyncio.sleep(SYNC)
        for server in self.servers.values():
            server.close()

    async def _sync(self) -> None:
        services = self.serialize((await asyncio.to_thread(self.core.list_service_for_all_namespaces)).items)
        slices = self.serialize((await asyncio.to_thread(
            self.discovery.list_endpoint_slice_for_all_namespaces)).items)
        self.routes = backends(services, slices, self.api_server)
        for key in set(self.servers) - set(self.routes):
            self.servers.pop(key).close()
            self.turns.pop(key, None)
        for key in set(self.routes) - set(self.servers):
            ip, port = key
            try:
                self.servers[key] = await asyncio.start_server(
                    lambda r, w, k=key: self._forward(k, r, w), ip, port, reuse_address=True)
            except OSError as error:
                if key not in self.failed:
                    log.warning("service %s:%s not served: %s", ip, port, error)
                    self.failed.add(key)
                continue
            self.failed.discard(key)
            log.info("service %s:%s -> %s", ip, port, self.routes[key])

    async def _forward(self, key: Key, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        targets = self.routes.get(key) or []
        turn = self.turns.setdefault(key, itertools.count())
        upstream = None
        for _ in targets:  # round robin; an endpoint that refuses is skipped for this connection
            address, port = targets[next(turn) % len(targets)]
            with contextlib.suppress(OSError):
                upstream = await asyncio.wait_for(asyncio.open_connection(address, port), 5)
                break
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                end.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One direction until its end; then a half-close, so the other direction still flows."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
