"""`kubectl mta credential rotate | retire-old | suspend | resume`: the merge patches they send (pure).

Each is a change of the SmtpCredential's spec, the operator's one input, so what the plugin does is what a
GitOps repository can do by committing the same fields: ``spec.rotation.requestedAt`` (each new value: one
new password), ``spec.rotation.retireRequestedAt`` (each new value: replaced passwords go now),
``spec.suspended``. No password travels in a patch: the operator makes the new one and puts it in the
connection Secret."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

Obj = dict[str, Any]


def stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rotate(credential: Obj, now: dt.datetime, grace: str | None) -> Obj:
    """The patch that asks for a new password; refused (ValueError) where there is none to make."""
    spec = credential.get("spec") or {}
    name = credential["metadata"]["name"]
    if spec.get("authentication") == "SourceIP":
        raise ValueError(f"SmtpCredential {name!r} authenticates by source address: it has no password")
    if spec.get("passwordSecretRef"):
        ref = spec["passwordSecretRef"]
        raise ValueError(f"SmtpCredential {name!r} uses its own password: change Secret {ref['name']!r} "
                         "instead; the previous password keeps working for spec.rotation.gracePeriod")
    rotation: Obj = {"requestedAt": stamp(now)}
    if grace is not None:
        if not re.fullmatch(r"[1-9][0-9]*[smh]", grace):  # the API would refuse it: say so before sending
            raise ValueError(f"--grace {grace!r}: a whole number of seconds, minutes or hours, such as 90m "
                             "or 24h")
        rotation["gracePeriod"] = grace
    return {"spec": {"rotation": rotation}}


def retire(now: dt.datetime) -> Obj:
    return {"spec": {"rotation": {"retireRequestedAt": stamp(now)}}}


def suspend(suspended: bool) -> Obj:
    return {"spec": {"suspended": suspended}}
