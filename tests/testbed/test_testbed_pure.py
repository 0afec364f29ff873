"""Pure parts of the test bed's pod runner: which pods it runs, the resolv.conf it gives an image
container, and the Service proxy's table of ClusterIPs to endpoints (no API server needed)."""

from __future__ import annotations

from typing import Any

import pytest
from testbed import podspec, services, stages

pytestmark = pytest.mark.unit

API_SERVER = ("127.0.0.1", 6443)


def pod(command: list[str] | None = None, pull: str | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "mta-operator:e2e"}
    if command is not None:
        container["command"] = command
    if pull is not None:
        container["imagePullPolicy"] = pull
    return {"metadata": {"name": "p", "namespace": "mail"}, "spec": {"containers": [container], **spec}}


def test_the_runner_plays_kubelet_for_its_commands_and_for_never_pulled_images_only() -> None:
    assert stages.runs(pod(["mta-relay"]))
    assert stages.runs(pod(["python3", "-m", "x"]))
    assert stages.runs(pod(pull="Never"))
    assert not stages.runs(pod(["nginx"]))
    assert not stages.runs(pod(pull="IfNotPresent"))


def test_resolv_conf_follows_the_pod_dns_policy_as_kubelet_does() -> None:
    first = podspec.resolv_conf(pod(), "10.96.0.10", "cluster.local", "nameserver 192.0.2.1\n")
    assert first == ("search mail.svc.cluster.local svc.cluster.local cluster.local\n"
                     "nameserver 10.96.0.10\noptions ndots:5\n")
    host = "nameserver 192.0.2.1\n"
    assert podspec.resolv_conf(pod(dnsPolicy="Default"), "10.96.0.10", "cluster.local", host) == host
    options = [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
    custom = pod(dnsPolicy="None", dnsConfig={"nameservers": ["192.0.2.53"], "searches": ["example.org"],
                                              "options": options})
    assert podspec.resolv_conf(custom, "10.96.0.10", "cluster.local", host) == (
        "search example.org\nnameserver 192.0.2.53\noptions ndots:2 edns0\n")
    added = pod(dnsConfig={"options": [{"name": "ndots", "value": "1"}]})
    assert podspec.resolv_conf(added, "10.96.0.10", "cluster.local", host).endswith("options ndots:1\n")


def service(name: str, ip: str, ports: list[dict[str, Any]], namespace: str = "mail") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"clusterIP": ip, "ports": ports}}


def endpoint_slice(owner: str, ports: list[dict[str, Any]], endpoints: list[dict[str, Any]],
                   namespace: str = "mail", family: str = "IPv4") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "labels": {"kubernetes.io/service-name": owner}},
            "addressType": family, "ports": ports, "endpoints": endpoints}


def test_service_table_maps_each_tcp_port_to_its_ready_endpoints() -> None:
    services_json = [
        service("main-mta", "10.96.0.20", [{"name": "submission", "port": 587},
                                           {"name": "dns", "port": 53, "protocol": "UDP"}]),
        service("headless", "None", [{"name": "x", "port": 80}]),
        service("idle", "10.96.0.21", [{"port": 80}]),
        service("kubernetes", "10.96.0.1", [{"name": "https", "port": 443}], namespace="default"),
    ]
    slices = [
        endpoint_slice("main-mta", [{"name": "submission", "port": 2587}, {"name": "dns", "port": 53,
                                                                           "protocol": "UDP"}],
                       [{"addresses": ["198.18.0.5"], "conditions": {"ready": True}},
                        {"addresses": ["198.18.0.6"]},  # no conditions: ready, as the API says
                        {"addresses": ["198.18.0.7"], "conditions": {"ready": False}}]),
        endpoint_slice("main-mta", [{"name": "submission", "port": 2587}],
                       [{"addresses": ["fd00::5"]}], family="IPv6"),
        endpoint_slice("main-mta", [{"name": "submission", "port": 2587}],
                       [{"addresses": ["198.18.0.9"]}], namespace="other"),
    ]
    assert services.backends(services_json, slices, API_SERVER) == {
        ("10.96.0.20", 587): [("198.18.0.5", 2587), ("198.18.0.6", 2587)],
        ("10.96.0.1", 443): [API_SERVER],  # the API server, without an EndpointSlice of its own
    }
