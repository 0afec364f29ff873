"""Fixtures for the operator's integration tests: CRDs installed once, the operator as a subprocess
watching the test's namespace, an API client, and a loopback DNS server for the DKIM checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mta_operator.api import KINDS
from mta_operator.kube.client import KubeClient
from opkit import CRDS, Operator
from support.dnsserver import DnsServer

if TYPE_CHECKING:
    from conftest import ReachableCluster


@pytest.fixture(scope="session")
def op_crds(kube: ReachableCluster) -> ReachableCluster:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *[f"crd/{kind.crd.name}" for kind in KINDS])
    return kube


@pytest.fixture
def k(op_crds: ReachableCluster, api_client) -> KubeClient:
    return KubeClient(api_client)


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def run_operator(op_crds: ReachableCluster, namespace: str,
                 tmp_path: Path) -> Iterator[Callable[..., Operator]]:
    started: list[Operator] = []

    def start(*extra: str, log: str = "operator.log") -> Operator:
        op = Operator(op_crds.kubeconfig, namespace, tmp_path / log, list(extra)).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
