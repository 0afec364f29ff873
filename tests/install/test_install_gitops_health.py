"""GitOps health: the Argo CD Lua check run in Lua 5.1 (Argo CD's gopher-lua dialect) by lupa, and kstatus's
rules, against recorded CR states; the Lua's terminal list and the documented reasons agree with the
operator's reason registry, both ways."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from install_kit import REPO
from install_kstatus import compute
from lupa import lua51
from mta_operator.api import healthgen
from mta_operator.api.reasons import Reason, terminal

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


def _lua_terminal_reasons() -> set[str]:
    block = re.search(r"local TERMINAL = \{(.*?)\n\}", HEALTH_LUA, re.S)
    assert block is not None
    return set(re.findall(r"^\s*(\w+) = true,", block.group(1), re.M))


def _table_reasons(text: str) -> dict[str, list[str]]:
    """Reason → the other cells of its row, for every table row that starts with a reason in backticks."""
    return {m.group(1): [c.strip() for c in m.group(2).split("|")]
            for m in re.finditer(r"^\| `(\w+)` \|(.*)\|$", text, re.M)}


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


REGISTERED = {r.value for r in Reason}
TERMINAL = {r.value for r in terminal()}


def test_generated_files_match_the_registry() -> None:
    assert healthgen.drift(REPO) == []


def test_lua_terminal_list_is_the_registrys() -> None:
    assert _lua_terminal_reasons() == TERMINAL


def test_gitops_readme_names_exactly_the_terminal_reasons() -> None:
    readme = (GITOPS / "README.md").read_text()
    section = _section(readme, "### Terminal reasons")
    assert set(_table_reasons(section)) == TERMINAL
    # The prose after the table names reasons that stay Progressing: registered and not terminal.
    prose = section.split(healthgen.END, 1)[1]
    named = set(re.findall(r"`([A-Z][a-z][A-Za-z0-9]*)`", prose))
    assert named
    assert named <= REGISTERED
    assert not named & TERMINAL


def test_operator_docs_list_every_reason_with_its_terminal_flag() -> None:
    docs = (REPO / "docs" / "operator.md").read_text()
    rows = _table_reasons(_section(docs, "## Condition reasons"))
    assert set(rows) == REGISTERED
    assert {name for name, cells in rows.items() if cells[1] == "yes"} == TERMINAL


def test_every_recorded_reason_is_registered() -> None:
    """The recorded states must stay true to the operator: a renamed reason fails here."""
    reasons = {c["reason"] for case in STATES
               for c in (case["obj"].get("status") or {}).get("conditions", [])}
    assert reasons - REGISTERED == set()


def test_recorded_degraded_states_carry_terminal_reasons() -> None:
    for case in STATES:
        ready = [c for c in (case["obj"].get("status") or {}).get("conditions", []) if c["type"] == "Ready"]
        if case["argocd"] == "Degraded":
            assert ready, case["name"]
            assert ready[0]["reason"] in TERMINAL, case["name"]


def test_healthgen_check_fails_on_drift_and_generation_repairs_it(tmp_path: Path) -> None:
    for path in (healthgen.LUA, healthgen.ARGOCD_CM, healthgen.GITOPS_README, healthgen.OPERATOR_DOCS):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((REPO / path).read_text())
    lua = tmp_path / healthgen.LUA
    lua.write_text(lua.read_text().replace("  ChildNotOwned = true,\n", ""))
    assert healthgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert healthgen.main(["--root", str(tmp_path)]) == 0
    assert healthgen.drift(tmp_path) == []
