"""The kind quickstart (docs/install.md + kind-config.yaml) holds together: host ports on 127.0.0.1 only, the
nodePorts the doc pins are the ones kind forwards and cover every port of the Service the operator makes
for the doc's Cluster, and the commands send to a forwarded port."""

from __future__ import annotations

import json
import re

import yaml
from install_kit import REPO
from mta_operator.api import Cluster
from mta_operator.render.services import client_service

DOC = (REPO / "docs" / "install.md").read_text()
KIND = yaml.safe_load((REPO / "kind-config.yaml").read_text())


def _mappings() -> dict[int, int]:
    """containerPort (the nodePort) → hostPort."""
    (node,) = KIND["nodes"]
    return {m["containerPort"]: m["hostPort"] for m in node["extraPortMappings"]}


def _doc_cluster() -> Cluster:
    block = re.search(r"<<'YAML'\n(.*?)\nYAML\n", DOC, re.S)
    assert block is not None
    return Cluster.model_validate(yaml.safe_load(block.group(1)))


def _pinned() -> dict[int, int]:
    """port → nodePort from the doc's `kubectl patch service` command."""
    patch = re.search(r"patch service main-mta -p '(.*?)'", DOC, re.S)
    assert patch is not None
    return {p["port"]: p["nodePort"] for p in json.loads(patch.group(1))["spec"]["ports"]}


def test_kind_forwards_only_to_loopback_within_the_nodeport_range() -> None:
    (node,) = KIND["nodes"]
    assert {m["listenAddress"] for m in node["extraPortMappings"]} == {"127.0.0.1"}
    assert all(30000 <= port <= 32767 for port in _mappings())


def test_pinned_nodeports_cover_the_service_and_are_forwarded() -> None:
    cluster = _doc_cluster()
    service = client_service(cluster)
    assert service["spec"]["type"] == "NodePort"
    assert {p["port"] for p in service["spec"]["ports"]} == set(_pinned())
    assert set(_pinned().values()) == set(_mappings())


def test_send_commands_use_the_forwarded_submission_port() -> None:
    host_port = _mappings()[_pinned()[587]]
    servers = set(re.findall(r"--server (127\.0\.0\.1:\d+)", DOC))
    assert servers == {f"127.0.0.1:{host_port}"}
