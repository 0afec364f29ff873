"""metav1.Condition bookkeeping: lastTransitionTime changes only when a condition's status flips."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from mta_operator.api.reasons import ConditionType, Reason

Condition = dict[str, Any]


def now_text(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def put(conditions: Sequence[Condition], type_: ConditionType, ok: bool | None, reason: Reason, message: str,
        generation: int | None, now: dt.datetime) -> list[Condition]:
    """Conditions with ``type_`` set (True/False/Unknown for ok True/False/None), others kept in order."""
    status = {True: "True", False: "False", None: "Unknown"}[ok]
    old = next((c for c in conditions if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status else now_text(now)
    new = {"type": type_, "status": status, "reason": reason, "message": message[:32768],
           "lastTransitionTime": since}
    if generation is not None:
        new["observedGeneration"] = generation
    out = [new if c.get("type") == type_ else dict(c) for c in conditions]
    return out if old else [*out, new]


def status_of(conditions: Sequence[Condition], type_: ConditionType) -> str | None:
    return next((c.get("status") for c in conditions if c.get("type") == type_), None)
