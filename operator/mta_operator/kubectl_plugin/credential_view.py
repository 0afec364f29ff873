"""`kubectl mta credential show`: what an application needs to send, password included, and what it sent
(``status.usage``, which the operator sums from the MTAs every few seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
NO_PASSWORD = "(none: SourceIP authentication, no AUTH)"  # noqa: S105 - a label, not a password
MASK = "(hidden: stdout is not a terminal; add --reveal to print it)"


@dataclass(frozen=True)
class Connection:
    username: str
    host: str
    port: int
    service_host: str  # the in-cluster Service name, for apps in the same Kubernetes cluster
    password: str | None  # None: SourceIP, recognised by address
    usage: Obj | None = None  # status.usage as the operator wrote it; None: nothing reported yet


def connection(credential: Obj, secret: dict[str, str], own_password: str | None) -> Connection:
    """From the connection Secret; a bring-your-own password comes from the user's Secret instead."""
    username = secret.get("username") or (credential.get("status") or {}).get("username") \
        or credential["spec"].get("username") or credential["metadata"]["name"]
    return Connection(username=username, host=secret.get("host", ""), port=int(secret.get("port") or 587),
                      service_host=secret.get("serviceHost", ""),
                      password=secret.get("password") or own_password,
                      usage=(credential.get("status") or {}).get("usage"))


def render(name: str, conn: Connection, show_password: bool) -> str:
    shown = conn.password if show_password else MASK
    password = NO_PASSWORD if conn.password is None else shown
    lines = [
        f"SmtpCredential: {name}",
        f"Host:           {conn.host}",
        f"Port:           {conn.port} (STARTTLS required)",
        f"In-cluster:     {conn.service_host}:{conn.port}",
        f"Username:       {conn.username}",
        f"Password:       {password}",
        *usage_lines(conn.usage),
    ]
    return "\n".join(lines)


def usage_lines(usage: Obj | None) -> list[str]:
    if not usage:
        return ["Sent:           nothing reported yet"]
    left = f" ({usage['remaining']} left in the quota)" if "remaining" in usage else ""
    last = usage.get("lastUsedTime")
    where = f" from {usage['lastUsedFrom']}" if usage.get("lastUsedFrom") else ""
    return [f"Sent:           {usage.get('sent', 0)} since {usage.get('periodStart', '?')}{left}",
            f"Last used:      {last}{where}" if last else "Last used:      never"]
