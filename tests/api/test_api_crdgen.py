"""The CRD generator: structural output, the CRD features the API relies on, and drift of crds/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_kube import CRDS
from mta_operator.api import KINDS, SmtpCredential
from mta_operator.api.crd import build
from mta_operator.api.crdgen import drift, main, render
from mta_operator.api.rules import VALIDATIONS
from mta_operator.api.schema import UnsupportedSchema, of_model
from pydantic import BaseModel, Field

pytestmark = pytest.mark.unit

FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "const", "nullable", "examples"}


def _schemas(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (properties, items, additionalProperties)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _schemas(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _schemas(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schemas(node["additionalProperties"], f"{path}{{}}")


def _root(kind: Any) -> dict[str, Any]:
    return build(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.crd.kind)
def test_schema_is_structural_and_described(kind: Any) -> None:
    for path, node in _schemas(_root(kind)):
        assert not FORBIDDEN_KEYS & node.keys(), (path, FORBIDDEN_KEYS & node.keys())
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        if path.count(".") >= 2 and not path.endswith(("[]", "{}")):  # every field below spec/status
            assert node.get("description"), f"{path} has no description"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.crd.kind)
def test_rules_have_bounded_inputs(kind: Any) -> None:
    # The API server refuses CEL whose estimated cost is unbounded: lists and strings under rules need limits.
    for path, node in _schemas(_root(kind)):
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: array without maxItems"
        if node.get("type") == "string" and VALIDATIONS in node:
            assert "maxLength" in node, f"{path}: string rule without maxLength"
        for rule in node.get(VALIDATIONS, []):
            assert rule["message"], f"{path}: rule without a message"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.crd.kind)
def test_crd_serves_status_columns_and_names(kind: Any) -> None:
    crd = build(kind)
    names, version = crd["spec"]["names"], crd["spec"]["versions"][0]
    assert names["categories"] == ["mta"]
    assert names["shortNames"] == [kind.crd.short_name]
    assert version["subresources"]["status"] == {}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"]["type"] == "date"
    assert columns["Message"]["priority"] == 1
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status", "lastTransitionTime", "reason"}
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_short_names_are_the_fixed_ones() -> None:
    assert {k.crd.plural: k.crd.short_name for k in KINDS} == {
        "clusters": "mtacluster", "sendingdomains": "sdomain", "smtpcredentials": "smtpcred"}


def test_defaults_and_enums_are_in_the_schema() -> None:
    cluster, _, credential = (_root(k)["properties"]["spec"]["properties"] for k in KINDS)
    assert cluster["smtp"]["properties"]["ports"]["default"] == [25, 587, 2587]
    assert cluster["smtp"]["default"] == {}
    assert cluster["delivery"]["properties"]["mode"]["enum"] == ["MX", "Smarthost"]
    assert credential["domains"]["properties"]["mode"]["default"] == "Specific"
    assert credential["authentication"] == {**credential["authentication"], "default": "Password",
                                            "enum": ["Password", "SourceIP"]}
    assert "default" not in credential["username"]  # metadata.name: resolved by the operator


def test_username_immutability_is_a_root_transition_rule() -> None:
    rules = _root(SmtpCredential)[VALIDATIONS]
    assert any("oldSelf.metadata.name" in r["rule"] and r["fieldPath"] == ".spec.username" for r in rules)


def test_optional_becomes_plain_and_int_or_string_is_structural() -> None:
    class Sample(BaseModel):
        maybe: int | None = Field(None, description="optional")
        size: int | str = Field(1, description="either")

    props = of_model(Sample)["properties"]
    assert props["maybe"] == {"description": "optional", "type": "integer"}
    assert props["size"] == {"description": "either", "default": 1, "x-kubernetes-int-or-string": True}


def test_unrepresentable_union_is_refused() -> None:
    class Bad(BaseModel):
        either: int | list[int]

    with pytest.raises(UnsupportedSchema):
        of_model(Bad)


def test_checked_in_crds_match_the_models() -> None:
    assert drift(CRDS) == [], "crds/ drifted: run python -m mta_operator.api.crdgen"


def test_check_command_reports_drift_and_generation_fixes_it(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(render())
    victim = next(tmp_path.iterdir())
    victim.write_text(victim.read_text().replace("maxLength: 255", "maxLength: 256"))
    (tmp_path / "stray.yaml").write_text("{}\n")
    capsys.readouterr()
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stray.yaml" in err
    assert victim.name in err
