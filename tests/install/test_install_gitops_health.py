"""GitOps health: the Argo CD Lua check run in Lua 5.1 (Argo CD's gopher-lua dialect) by lupa, and kstatus's
rules, against recorded CR states; the documented terminal reasons agree with the Lua and the operator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from install_kit import REPO
from install_kstatus import compute
from lupa import lua51

pytestmark = pytest.mark.unit

GITOPS = REPO / "gitops"
HEALTH_LUA = (GITOPS / "argocd" / "health.lua").read_text()
STATES = yaml.safe_load((Path(__file__).parent / "install_cr_states.yaml").read_text())
KINDS = ("Cluster", "SendingDomain", "SmtpCredential")


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the script as Argo CD does: the live object as global `obj`, the returned table is the health."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    return dict(lua.execute(HEALTH_LUA))


@pytest.mark.parametrize("case", STATES, ids=[c["name"] for c in STATES])
def test_argocd_health_of_recorded_state(case: dict[str, Any]) -> None:
    health = argocd_health(case["obj"])
    assert health["status"] == case["argocd"]
    assert isinstance(health["message"], str)


@pytest.mark.parametrize("case", STATES, ids=[c["name"] for c in STATES])
def test_kstatus_of_recorded_state(case: dict[str, Any]) -> None:
    assert compute(case["obj"]) == case["kstatus"]


def test_degraded_message_names_reason_and_message() -> None:
    case = next(c for c in STATES if c["argocd"] == "Degraded")
    ready = next(c for c in case["obj"]["status"]["conditions"] if c["type"] == "Ready")
    assert argocd_health(case["obj"])["message"] == f"{ready['reason']}: {ready['message']}"


def test_argocd_cm_installs_the_same_script_for_every_kind() -> None:
    cm = yaml.safe_load((GITOPS / "argocd" / "argocd-cm.yaml").read_text())
    keys = [f"resource.customizations.health.mta-operator.io_{kind}" for kind in KINDS]
    assert cm["data"] == dict.fromkeys(keys, HEALTH_LUA)


def _operator_source() -> str:
    package = REPO / "operator" / "mta_operator"
    return "\n".join(p.read_text() for p in package.rglob("*.py") if "kubectl_plugin" not in p.parts)


def _lua_terminal_reasons() -> set[str]:
    block = re.search(r"local TERMINAL = \{(.*?)\n\}", HEALTH_LUA, re.S)
    assert block is not None
    return set(re.findall(r"^\s*(\w+) = true,", block.group(1), re.M))


def test_terminal_reasons_are_documented_and_set_by_the_operator() -> None:
    lua_reasons = _lua_terminal_reasons()
    readme = (GITOPS / "README.md").read_text()
    section = readme.split("### Terminal reasons", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `(\w+)` \|", section, re.M)) == lua_reasons
    operator_source = _operator_source()
    unused = {r for r in lua_reasons if f'"{r}"' not in operator_source}
    assert unused == set(), "terminal reasons the operator never sets"


def test_every_recorded_reason_is_one_the_operator_sets() -> None:
    """The recorded states must stay true to the operator: a renamed reason fails here."""
    operator_source = _operator_source()
    reasons = {c["reason"] for case in STATES
               for c in (case["obj"].get("status") or {}).get("conditions", [])}
    assert {r for r in reasons if f'"{r}"' not in operator_source} == set()
