"""`kubectl mta messages`: the events each MTA holds (``/admin/v1/messages``), merged into one path per
message in time order. Pure: the answers in, text out."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mta_relay.events.record import EventType

_SINCE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_seconds(text: str, now: float | None = None) -> float:
    """``--since``: a duration back from now (``90m``, ``24h``, ``7d``) or an RFC 3339 time → Unix time."""
    match = _SINCE.match(text)
    if match:
        return (now if now is not None else time.time()) - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: a duration such as 90m, 24h, 7d, or a time such as "
                         "2026-11-27T10:00:00Z") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def query(*, recipient: str | None, sender: str | None, credential: str | None, message_id: str | None,
          since: float | None, types: Sequence[str], limit: int) -> list[tuple[str, str]]:
    """The admin API's query parameters; event type names checked here so a typo is named at once."""
    known = {str(t) for t in EventType}
    bad = [t for t in types if t not in known]
    if bad:
        raise ValueError(f"--type {bad[0]!r}: one of {', '.join(sorted(known))}")
    found = [(k, v) for k, v in (("recipient", recipient), ("sender", sender), ("credential", credential),
                                 ("message_id", message_id)) if v]
    if since is not None:
        found.append(("since", f"{since:.3f}"))
    if types:
        found.append(("type", ",".join(types)))
    found.append(("limit", str(limit)))
    return found


def merge(answers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every MTA's events, one list in time order, duplicates (same event id) once."""
    seen: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for event in answer.get("events") or []:
            seen.setdefault(str(event.get("event_id")), dict(event))
    return sorted(seen.values(), key=lambda e: (float(e.get("timestamp") or 0), str(e.get("event_id"))))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _response(event: Mapping[str, Any]) -> str:
    response = event.get("response") or {}
    enhanced = response.get("enhanced_code")
    code = " ".join(str(p) for p in (response.get("code"), enhanced and
                                     "{class}.{subject}.{detail}".format(**enhanced)) if p)
    return f"{code} {response.get('content', '')}".strip()


def _step(event: Mapping[str, Any]) -> str:
    kind = event.get("type")
    peer = event.get("peer_address") or {}
    where = peer.get("name") or peer.get("addr") or ""
    tls = event.get("tls_protocol_version") or ""
    parts = [f"{kind:<16}", f"on {event.get('mta') or '?'}"]
    if kind == str(EventType.RECEPTION):
        parts.append(f"from {event.get('source_address') or '?'} as {event.get('credential') or '-'} "
                     f"({event.get('reception_protocol') or '?'})")
    elif kind == str(EventType.REJECTION):
        parts.append(f"{_response(event)} [{event.get('reason') or ''}]")
    else:
        attempt = event.get("num_attempts")
        parts.append(f"attempt {attempt}" if attempt else "")
        if where:
            parts.append(f"at {where}" + (f" ({tls})" if tls else ""))
        parts.append(_response(event))
        if event.get("bounce_classification"):
            parts.append(f"[{event.get('bounce_kind')} {event['bounce_classification']}]")
    return "  ".join(p for p in parts if p)


def render(events: Sequence[Mapping[str, Any]], failed: Mapping[str, str] | None = None) -> str:
    """One block per message and recipient: its steps in time order. ``failed``: MTAs that did not
    answer, and why (their events are missing from what is shown)."""
    if not events:
        lines = ["no events match"]
    else:
        groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for event in events:
            key = (str(event.get("message_id") or event.get("id") or ""), str(event.get("recipient") or ""))
            groups.setdefault(key, []).append(event)
        lines = []
        for (message_id, recipient), steps in groups.items():
            first = steps[0]
            lines.append(f"{message_id or '(no Message-ID)'}  {first.get('sender') or '<>'} -> "
                         f"{recipient or '(no recipient)'}  queue id {first.get('id') or '-'}")
            lines += [f"  {_when(float(s.get('timestamp') or 0))}  {_step(s)}" for s in steps]
    for mta, why in sorted((failed or {}).items()):
        lines.append(f"warning: {mta} did not answer ({why}); its events are not shown")
    return "\n".join(lines)
