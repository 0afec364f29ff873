"""Run-time options of the operator (from the command line)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    relay_image: str = "ghcr.io/mta-operator/mta-relay:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    workers: int = 16
    table_debounce: float = 0.1  # seconds a burst of credential changes is coalesced into one write
    resync_seconds: float = 600  # full re-list: catches what watches cannot (missed deletes, lost children)
    dns_nameserver: str | None = None  # host[:port] for the DKIM/SPF checks; None: the system resolver
    dns_check_seconds: float = 300
