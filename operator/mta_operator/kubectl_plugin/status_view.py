"""`kubectl mta status`: clusters with their MTAs, domains with verification, credentials with summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mta_operator.api.reasons import ConditionType

from . import table

Obj = dict[str, Any]


def condition(obj: Obj, type_: ConditionType) -> Obj:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def _ready(obj: Obj) -> str:
    """Ready's status, with its reason when not True (what a person checks first)."""
    ready = condition(obj, ConditionType.READY)
    if not ready:
        return "Pending"
    status = ready.get("status", "Unknown")
    return status if status == "True" else f"{status} ({ready.get('reason', '')})"


def _rows(objs: Sequence[Obj], columns: Sequence[str], cells: Any, all_namespaces: bool) -> str:
    headers = (["NAMESPACE"] if all_namespaces else []) + list(columns)
    rows = [([o["metadata"]["namespace"]] if all_namespaces else []) + [str(c) for c in cells(o)]
            for o in objs]
    return table.render(headers, rows)


def _cluster_cells(o: Obj) -> list[str]:
    status = o.get("status") or {}
    connection = status.get("connection") or {}
    ports = ",".join(str(p) for p in connection.get("smtpPorts") or [])
    return [o["metadata"]["name"], o["spec"].get("hostname", ""),
            (status.get("mtas") or {}).get("summary", ""),
            f"{connection.get('smtpHost', '')}:{ports}" if ports else "", _ready(o)]


def _cluster_ref(o: Obj) -> str:
    name: str = (o["spec"].get("clusterRef") or {}).get("name", "")
    return name


def _domain_cells(o: Obj) -> list[str]:
    return [o["metadata"]["name"], o["spec"].get("domain", ""), _cluster_ref(o),
            condition(o, ConditionType.VERIFIED).get("status", "Unknown"), _ready(o)]


def _credential_cells(o: Obj) -> list[str]:
    status = o.get("status") or {}
    username = status.get("username") or o["spec"].get("username") or o["metadata"]["name"]
    return [o["metadata"]["name"], username, _cluster_ref(o), status.get("summary", ""), _ready(o)]


def render(clusters: Sequence[Obj], domains: Sequence[Obj], credentials: Sequence[Obj],
           all_namespaces: bool) -> str:
    sections = [
        ("Clusters", clusters, ("NAME", "HOSTNAME", "MTAS", "SMTP", "READY"), _cluster_cells),
        ("SendingDomains", domains, ("NAME", "DOMAIN", "CLUSTER", "VERIFIED", "READY"), _domain_cells),
        ("SmtpCredentials", credentials, ("NAME", "USERNAME", "CLUSTER", "SUMMARY", "READY"),
         _credential_cells),
    ]
    out = []
    for title, objs, columns, cells in sections:
        body = _rows(objs, columns, cells, all_namespaces) if objs else "(none)"
        out.append(f"{title}:\n{body}")
    return "\n\n".join(out)
