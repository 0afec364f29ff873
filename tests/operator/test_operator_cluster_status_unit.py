"""A Cluster's Ready between full reconciles: problems only a full reconcile finds are kept by the
status-only writes (MTAs becoming ready) in between, so a terminal reason does not flip away unseen."""

from __future__ import annotations

from typing import Any

import pytest
from mta_operator.api.reasons import ConditionType, Reason
from mta_operator.reconcile.cluster import _held_problem

pytestmark = pytest.mark.unit


def _cond(type_: ConditionType, status: str, reason: str, message: str = "why") -> dict[str, Any]:
    return {"type": type_.value, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


def test_a_status_only_write_keeps_child_not_owned() -> None:
    conds = [_cond(ConditionType.READY, "False", Reason.CHILD_NOT_OWNED.value, "Service x-mta is not ours")]
    assert _held_problem(conds, status_only=True) == (Reason.CHILD_NOT_OWNED, "Service x-mta is not ours")


def test_a_full_reconcile_decides_child_not_owned_afresh() -> None:
    conds = [_cond(ConditionType.READY, "False", Reason.CHILD_NOT_OWNED.value)]
    assert _held_problem(conds, status_only=False) is None


def test_a_failing_tls_condition_is_kept() -> None:
    conds = [_cond(ConditionType.TLS_READY, "False", Reason.CERTIFICATE_PENDING.value, "waiting"),
             _cond(ConditionType.READY, "False", Reason.CERTIFICATE_PENDING.value, "waiting")]
    assert _held_problem(conds, status_only=True) == (Reason.CERTIFICATE_PENDING, "waiting")


def test_other_reasons_are_recomputed() -> None:
    conds = [_cond(ConditionType.TLS_READY, "True", Reason.OPERATOR_CA.value),
             _cond(ConditionType.READY, "False", Reason.MTAS_NOT_READY.value)]
    assert _held_problem(conds, status_only=True) is None
