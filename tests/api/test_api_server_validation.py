"""The real API server refuses each invalid manifest of the table, naming the field; accepts edge cases."""

from __future__ import annotations

from typing import Any

import pytest
from api_cases import ALLOWED_CHANGES, CHANGES, INVALID, IP_PARITY, VALID, Change, Invalid, cred
from api_kube import apply, get
from mta_operator.api import KINDS

pytestmark = pytest.mark.testbed
BY_KIND = {kind.crd.kind: kind for kind in KINDS}


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_api_server_refuses_invalid_manifest(mta_crds: Any, api_namespace: str, case: Invalid) -> None:
    result = apply(mta_crds, api_namespace, case.manifest)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert f"{case.field}: " in result.stderr, result.stderr
    assert case.message in result.stderr, result.stderr


@pytest.mark.parametrize("case", CHANGES, ids=lambda c: c.id)
def test_api_server_refuses_changing_an_immutable_field(mta_crds: Any, api_namespace: str,
                                                        case: Change) -> None:
    created = apply(mta_crds, api_namespace, case.before)
    assert created.returncode == 0, created.stderr
    result = apply(mta_crds, api_namespace, case.after)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert f"{case.field}: " in result.stderr, result.stderr
    assert case.message in result.stderr, result.stderr


@pytest.mark.parametrize(("name", "before", "after"), ALLOWED_CHANGES, ids=[c[0] for c in ALLOWED_CHANGES])
def test_api_server_allows_changes_that_keep_immutable_fields(mta_crds: Any, api_namespace: str, name: str,
                                                          before: dict, after: dict) -> None:
    for manifest in (before, after):
        result = apply(mta_crds, api_namespace, manifest)
        assert result.returncode == 0, result.stderr


def _without_empty(value: Any) -> Any:
    """Drop empty lists/maps: pydantic fills them in Python, the API server leaves them out."""
    if isinstance(value, dict):
        pruned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


@pytest.mark.parametrize(("name", "manifest"), VALID, ids=[v[0] for v in VALID])
def test_api_server_accepts_edge_case_and_defaults_like_the_models(mta_crds: Any, api_namespace: str,
                                                                    name: str, manifest: dict) -> None:
    result = apply(mta_crds, api_namespace, manifest)
    assert result.returncode == 0, result.stderr
    stored = get(mta_crds, api_namespace, manifest["kind"], manifest["metadata"]["name"])
    parsed = BY_KIND[manifest["kind"]].model_validate(manifest).spec
    assert _without_empty(stored["spec"]) == _without_empty(parsed.model_dump(mode="json", exclude_none=True))


@pytest.mark.parametrize(("index", "text", "accepted"), [(i, t, a) for i, (t, a) in enumerate(IP_PARITY)],
                         ids=[t for t, _ in IP_PARITY])
def test_api_server_ip_rules_agree_with_the_python_mirror(mta_crds: Any, api_namespace: str, index: int,
                                                          text: str, accepted: bool) -> None:
    result = apply(mta_crds, api_namespace, cred(f"parity-{index}", allowedIPs=[text]))
    assert (result.returncode == 0) is accepted, result.stderr or result.stdout
