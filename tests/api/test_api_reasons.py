"""The reason registry: well-formed entries, and no condition type or reason written anywhere in the
operator except through it (so the registry, the Argo CD check and the docs cannot drift from the code)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mta_operator.api import KINDS
from mta_operator.api.reasons import ConditionType, Reason, terminal

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "mta_operator"
# The API's own modules: the registry itself, and printer column headers named like condition types.
EXEMPT = {PACKAGE / "api"}
CAMEL_WORD = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*$")
EVENT_TYPES = {"Normal", "Warning"}
# Callables that take a reason, and the position of that argument.
REASON_ARGUMENT = {"put": 3, "event": 2, "Refused": 0, "TlsResult": 2, "Outcome": 1}
KIND_NAMES = {kind.__name__ for kind in KINDS}
CONDITION_REASON_PATTERN = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")  # metav1.Condition


def test_every_reason_is_well_formed() -> None:
    for reason in Reason:
        assert CONDITION_REASON_PATTERN.match(reason.value), reason
        assert reason.meaning, reason
        assert not {"\n", "|"} & set(reason.meaning), reason
        for where in reason.conditions:
            kind, _, type_ = where.partition(".")
            assert kind in KIND_NAMES, (reason, where)
            assert type_ in set(ConditionType), (reason, where)


def test_terminal_reasons_are_ones_ready_false_carries() -> None:
    """Argo CD reads only Ready: a terminal reason that never reaches Ready would mean nothing."""
    assert terminal()
    for reason in terminal():
        assert any(where.endswith(".Ready") for where in reason.conditions), reason


def test_reason_values_are_unique() -> None:
    values = [reason.value for reason in Reason]
    assert len(values) == len(set(values))


def _modules() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if not any(path.is_relative_to(exempt) for exempt in EXEMPT):
            yield path


def _strings(node: ast.AST) -> Iterator[ast.Constant]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _reason_positions(tree: ast.AST) -> Iterator[ast.AST]:
    """The expressions that become a reason: a builder's reason argument, and the reason slot of the
    ``(ok, reason, message)`` and ``(type, ok, reason, message)`` tuples the reconcilers pass around."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (index := REASON_ARGUMENT.get(_callee(node))) is not None:
            if index < len(node.args) and not any(isinstance(a, ast.Starred) for a in node.args[:index + 1]):
                yield node.args[index]
            yield from (kw.value for kw in node.keywords if kw.arg == "reason")
        elif isinstance(node, ast.Tuple):
            elts = node.elts
            flags = [isinstance(e, ast.Constant) and isinstance(e.value, bool) for e in elts]
            if len(elts) == 3 and flags[0]:
                yield elts[1]
            elif len(elts) == 4 and flags[1]:
                yield elts[2]


def violations(source: str, name: str) -> list[str]:
    registered = {r.value for r in Reason} | {t.value for t in ConditionType}
    tree = ast.parse(source)
    found = [f"{name}:{c.lineno}: {c.value!r} is a registered name written as a literal"
             for c in _strings(tree) if c.value in registered]
    for position in _reason_positions(tree):
        found += [f"{name}:{c.lineno}: reason {c.value!r} is not from mta_operator.api.reasons"
                  for c in _strings(position) if CAMEL_WORD.match(c.value) and c.value not in EVENT_TYPES
                  and c.value not in registered]
    return found


def test_no_reason_or_condition_type_literal_outside_the_registry() -> None:
    found = [v for path in _modules()
             for v in violations(path.read_text(), str(path.relative_to(PACKAGE)))]
    assert found == []


@pytest.mark.parametrize("source", [
    'conditions.put(conds, ConditionType.READY, False, "BrandNew", "message", gen, now)',
    'await ctx.event(ref, "Warning", "BrandNew", note)',
    'raise Refused("BrandNew", "message")',
    'outcome = (False, "BrandNew", "message")',
    'seen.conditions.append((SPOOL, True, "BrandNew" if ok else Reason.RETIRED, "message"))',
    'conditions.put(conds, "Ready", False, Reason.RECONCILING, "", gen, now)',
    'if spool["reason"] == "VolumeNotBound": pass',
])
def test_the_scan_finds_a_literal(source: str) -> None:
    assert violations(source, "snippet")


def test_the_scan_leaves_messages_and_event_types_alone() -> None:
    source = ('await ctx.event(ref, "Normal", Reason.SCALED_DOWN, "Scaled down")\n'
              'outcome = (True, Reason.READY, "3/3 MTAs ready")\n')
    assert violations(source, "snippet") == []
