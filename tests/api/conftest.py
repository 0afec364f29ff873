"""Fixtures for the API server tests: the CRDs installed once per session, a namespace per module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from api_kube import CRDS, FIELD_MANAGER
from mta_operator.api import KINDS

if TYPE_CHECKING:
    from conftest import ReachableCluster


@pytest.fixture(scope="session")
def mta_crds(kube: ReachableCluster) -> ReachableCluster:
    """The generated CRDs applied (server-side, idempotent) and Established."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}",
                 "-f", str(CRDS))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *[f"crd/{kind.crd.name}" for kind in KINDS])
    return kube


@pytest.fixture(scope="module")
def api_namespace(mta_crds: ReachableCluster) -> Iterator[str]:
    """One namespace for a whole module of table-driven cases (each case uses its own object name)."""
    name = f"api-{uuid.uuid4().hex[:8]}"
    mta_crds.kubectl("create", "namespace", name)
    yield name
    mta_crds.kubectl("delete", "namespace", name, "--wait=false", check=False)

