"""`kubectl mta suppressions`: the Cluster's suppression list through one MTA's admin API
(``/admin/v1/suppressions``). Pure: options and files in, the requests' bodies and queries and the text
out; the entries are checked with the relay's own rules (``mta_relay.suppressions.store``), so a bad line
is named before anything is sent.

The export format is the admin API's entry object, one per line (``{"address", "reason", "source",
"addedBy", "detail", "created", "expires"}``); an import reads it back, and also CSV or plain text whose
first field is the address.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mta_relay.admin_api import MAX_LIMIT
from mta_relay.suppressions import store

from . import table

IMPORT_BATCH = 5_000  # entries per POST: well under the admin API's cap (MAX_LIMIT entries, 8 MiB)
EXPORT_PAGE = MAX_LIMIT
HEADER_NAMES = frozenset({"email", "address", "email_address", "e-mail"})
# An entry expiring within this margin is left out of an import: it would be gone before it arrived, and
# the MTA refuses an entry already expired (one such entry would refuse its whole batch).
EXPIRY_MARGIN_SECONDS = 60
MAX_REPORTED = 20  # bad lines named in one error; the count says how many more
_DURATION = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FIELD_SEPARATORS = re.compile(r"[,;\t]")


class BadInput(ValueError):
    """An option or input line the MTA would refuse; the message names it (``line 7: address: ...``)."""


def duration_seconds(text: str, option: str) -> int:
    """``30d``, ``12h``, ``90m``, ``3600s`` → seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise BadInput(f"{option} {text!r}: a duration such as 90m, 24h or 30d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _checked(address: str, *, reason: str, detail: str, expires: float | None, now: float) -> dict[str, Any]:
    """One entry of an add request, checked as the MTA will check it (store.BadEntry names the field)."""
    found = store.entry(address, reason=reason, source="Manual", added_by="", detail=detail, now=now,
                        expires=expires)
    body: dict[str, Any] = {"address": found.address, "reason": found.reason}
    if found.detail:
        body["detail"] = found.detail
    if found.expires is not None:
        body["expires"] = found.expires
    return body


def manual_entries(addresses: Sequence[str], *, reason: str, detail: str, expires_in: str | None,
                   now: float) -> list[dict[str, Any]]:
    """The entries of ``add``: every address checked before any is sent."""
    expires = now + duration_seconds(expires_in, "--expires-in") if expires_in else None
    out, bad = [], []
    for address in addresses:
        try:
            out.append(_checked(address, reason=reason, detail=detail, expires=expires, now=now))
        except store.BadEntry as error:
            bad.append(str(error))
    if bad:
        raise BadInput(_listed(bad))
    return out


def add_body(entries: Sequence[Mapping[str, Any]], source: str) -> dict[str, Any]:
    return {"source": source, "entries": list(entries)}


@dataclass
class Parsed:
    """An import file, checked: the entries to send, and what was left out and why."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    expired: int = 0  # JSON lines whose entry has expired (or expires within a minute)
    duplicates: int = 0  # lines naming an address an earlier line named (the last one counts)


def _first_field(line: str) -> str:
    return _FIELD_SEPARATORS.split(line, maxsplit=1)[0].strip().strip('"').strip()


def _json_line(line: str) -> tuple[str, str | None, str, float | None]:
    """(address, reason, detail, expires) of a line of the export format; BadInput names the field."""
    try:
        item = json.loads(line)
    except ValueError:
        raise BadInput("not a JSON object (a line starting with '{' must be one)") from None
    if not isinstance(item, dict) or not isinstance(item.get("address"), str):
        raise BadInput("address: a string expected")
    reason = item.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadInput("reason: a string expected")
    detail = item.get("detail")
    if detail is not None and not isinstance(detail, str):
        raise BadInput("detail: a string expected")
    expires = item.get("expires")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int | float)
                                or not math.isfinite(expires)):
        raise BadInput("expires: Unix seconds or null")
    return item["address"], reason or None, detail or "", None if expires is None else float(expires)


def parse_import(lines: Iterable[str], *, reason: str, now: float) -> Parsed:
    """Every line checked before anything is sent: JSON lines (the export format), or CSV / plain text
    whose first field is the address (``reason`` is theirs). A first line ``email`` or ``address`` is a
    header; blank lines and ``#`` comments are skipped. BadInput lists the bad lines by number."""
    parsed = Parsed()
    by_address: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    seen_data = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip().lstrip("\ufeff")  # a byte-order mark from a spreadsheet's export
        if not line or line.startswith("#"):
            continue
        first_data, seen_data = not seen_data, True
        try:
            if line.startswith("{"):
                address, own_reason, detail, expires = _json_line(line)
                if expires is not None and expires <= now + EXPIRY_MARGIN_SECONDS:
                    parsed.expired += 1
                    continue
                entry = _checked(address, reason=own_reason or reason, detail=detail, expires=expires,
                                 now=now)
            else:
                address = _first_field(line)
                if first_data and address.lower() in HEADER_NAMES:
                    continue
                entry = _checked(address, reason=reason, detail="", expires=None, now=now)
        except (BadInput, store.BadEntry) as error:
            bad.append(f"line {number}: {error}")
            continue
        if entry["address"] in by_address:
            parsed.duplicates += 1
            del by_address[entry["address"]]  # the last line counts, in its own place
        by_address[entry["address"]] = entry
    if bad:
        raise BadInput(_listed(bad) + "\nnothing was sent")
    parsed.entries = list(by_address.values())
    return parsed


def _listed(bad: Sequence[str]) -> str:
    shown = "\n".join(bad[:MAX_REPORTED])
    return shown + (f"\n... and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else "")


def batches(entries: Sequence[dict[str, Any]], size: int = IMPORT_BATCH) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(entries), size):
        yield list(entries[start:start + size])


def list_query(*, prefix: str | None, reason: str | None, after: str | None,
               limit: int) -> list[tuple[str, str]]:
    """The admin API's query for one page."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput(f"--limit {limit}: 1 to {MAX_LIMIT} per page")
    found = [(k, v) for k, v in (("prefix", (prefix or "").lower()), ("reason", reason), ("after", after))
             if v]
    found.append(("limit", str(limit)))
    return found


def age(seconds: float) -> str:
    """kubectl's style: 45s, 12m, 5h, 3d (whole units, rounded down)."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _expires(entry: Mapping[str, Any], now: float) -> str:
    expires = entry.get("expires")
    if expires is None:
        return "never"
    return f"in {age(float(expires) - now)} ({datetime.fromtimestamp(float(expires), UTC):%Y-%m-%d})"


def render(entries: Sequence[Mapping[str, Any]], *, total: int | None, now: float, more: bool) -> str:
    """The table of ``list``, with the count shown and the list's total on the MTA asked."""
    lines = []
    if entries:
        rows = [[str(e.get("address", "")), str(e.get("reason", "")), str(e.get("source", "")),
                 str(e.get("addedBy", "")) or "-", age(now - float(e.get("created") or now)),
                 _expires(e, now)] for e in entries]
        lines.append(table.render(["ADDRESS", "REASON", "SOURCE", "ADDED BY", "ADDED", "EXPIRES"], rows))
    of = f" of {total} on the list" if total is not None else ""
    if entries:
        hint = "; more match: raise --limit or narrow with --prefix / --reason" if more else ""
        lines.append(f"{len(entries)} shown{of}{hint}")
    else:
        lines.append("the suppression list is empty" if total == 0 else f"no entries match{of}")
    return "\n".join(lines)


def export_line(entry: Mapping[str, Any]) -> str:
    """One line of an export: the admin API's entry object as it came."""
    return json.dumps(dict(entry), separators=(",", ":"), ensure_ascii=False)
