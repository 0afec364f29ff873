"""Queue-aware scale-down, as pure decisions: which MTAs leave, whether their queues are handed over, when
the StatefulSet may shrink, which volumes are kept with mail on them; and the one call the operator makes
to an MTA to learn how much it still holds (``queue_status``).

The sequence (driven by reconcile/cluster.py, one step per reconcile, level-based):
1. spec.mtas drops below the StatefulSet's replicas: the MTAs with the highest ordinals are *leaving*. The
   relay settings name them and the MTAs that stay (``handoff.leaving``/``peers``); the StatefulSet keeps
   its replicas. A leaving MTA turns not ready (the Services drop it) and sends every queued message to a
   peer, which stores it durably before the sender forgets it.
2. The operator asks each leaving MTA for its queue (peer token, certificate pinned). Once every leaving
   MTA says it knows it is leaving and holds nothing, the StatefulSet shrinks and their (empty) volumes
   are deleted.
3. Past ``queue.handoffTimeout`` the StatefulSet shrinks all the same: nothing is dropped, the volumes
   that still hold mail are kept and listed in status, and a later scale-up brings their MTAs back with
   them.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field

from mta_relay.handoff import QUEUE_PATH, leaf_certificate

POLL_SECONDS = 2.0
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class QueueReport:
    """What a leaving MTA says about itself; ``None`` in its place: it did not answer."""

    depth: int
    leaving: bool
    # Delivery events still waiting for a webhook: they move to a peer after the mail (0 from relays
    # that do not say)
    pending_events: int = 0
    # webhook name → (events waiting, age of the oldest in seconds, events dropped ever)
    webhooks: dict[str, tuple[int, float, int]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.leaving and self.depth == 0 and self.pending_events == 0


@dataclass(frozen=True)
class Plan:
    replicas: int  # what the StatefulSet runs from now on
    leaving: tuple[int, ...]  # ordinals handing off (empty: none)
    done: bool = False  # the hand-off is over: shrink to ``replicas`` now
    timed_out: bool = False
    queued: dict[int, int | None] = field(default_factory=dict)  # ordinal → messages left (None: unknown)


def plan(desired: int, running: int | None, reports: dict[int, QueueReport | None], elapsed: float,
         timeout: float) -> Plan:
    """``running``: the StatefulSet's replicas now (None: no StatefulSet yet); ``reports``: queue reports
    of the leaving ordinals (only asked for once leaving); ``elapsed``: seconds since the hand-off began."""
    if running is None or desired >= running:
        return Plan(replicas=desired, leaving=())
    leaving = tuple(range(desired, running))
    queued = {i: (r.depth if r is not None else None) for i, r in ((i, reports.get(i)) for i in leaving)}
    empty = all(r is not None and r.empty for r in (reports.get(i) for i in leaving))
    if empty:
        return Plan(replicas=desired, leaving=leaving, done=True, queued=queued)
    if elapsed >= timeout:
        return Plan(replicas=desired, leaving=leaving, done=True, timed_out=True, queued=queued)
    return Plan(replicas=running, leaving=leaving, queued=queued)


def webhook_backlog(reports: list[QueueReport]) -> dict[str, tuple[int, float, int]]:
    """Per webhook over the MTAs that answered: events waiting, oldest age, dropped."""
    total: dict[str, tuple[int, float, int]] = {}
    for report in reports:
        for name, (pending, oldest, dropped) in report.webhooks.items():
            was = total.get(name, (0, 0.0, 0))
            total[name] = (was[0] + pending, max(was[1], oldest), was[2] + dropped)
    return total


def summary(names: dict[int, str], queued: dict[int, int | None]) -> str:
    """``x-mta-2: 120 messages, x-mta-1: not answering``, for conditions."""
    parts = []
    for ordinal in sorted(queued, reverse=True):
        count = queued[ordinal]
        parts.append(f"{names[ordinal]}: {'not answering' if count is None else f'{count} messages'}")
    return ", ".join(parts)


def queue_status(address: str, port: int, token: str, cert_pem: bytes) -> QueueReport | None:
    """Ask one MTA for its queue; None when it does not answer or answers something else."""
    answer = fetch_pinned(address, port, QUEUE_PATH, cert_pem, {"Authorization": f"Bearer {token}"})
    try:
        data = json.loads(answer[1]) if answer is not None and answer[0] == 200 else None
        if not data:
            return None
        hooks = {str(name): (int(w["pending"]), float(w["oldestPendingAge"]), int(w["dropped"]))
                 for name, w in (data.get("webhooks") or {}).items()}
        return QueueReport(depth=int(data["depth"]), leaving=bool(data["leaving"]),
                           pending_events=int(data.get("pendingEvents", 0)), webhooks=hooks)
    except (ValueError, KeyError, TypeError):
        return None


def fetch_pinned(address: str, port: int, path: str, cert_pem: bytes,
                 headers: dict[str, str]) -> tuple[int, bytes] | None:
    """GET ``path`` from an MTA: (status, body), or None when it does not answer. The MTAs serve the
    cluster's own certificate, which does not name pod IPs, so the certificate is pinned (compared
    whole) instead of checked by name, and headers (the token) are sent only after that check."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin below is the check
    conn = http.client.HTTPSConnection(address, port, timeout=REQUEST_TIMEOUT, context=context)
    try:
        conn.connect()
        assert conn.sock is not None
        if conn.sock.getpeercert(binary_form=True) != leaf_certificate(cert_pem):
            return None
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, ValueError, ssl.SSLError, http.client.HTTPException):
        return None
    finally:
        conn.close()
