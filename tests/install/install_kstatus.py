"""kstatus's rules for a custom resource (sigs.k8s.io/cli-utils pkg/kstatus/status, as Flux uses them),
mirrored for the tests: no Python implementation exists, and the Go module is not on the proxy here."""

from __future__ import annotations

from typing import Any


def compute(obj: dict[str, Any]) -> str:
    """InProgress, Current, Failed or Terminating, in kstatus's order of checks."""
    metadata, status = obj.get("metadata", {}), obj.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return "Terminating"
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress"
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if conditions.get("Reconciling", {}).get("status") == "True":
        return "InProgress"
    if conditions.get("Stalled", {}).get("status") == "True":
        return "Failed"
    ready = conditions.get("Ready")
    if ready is not None and ready.get("status") != "True":
        return "InProgress"
    return "Current"
