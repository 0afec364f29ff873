"""`kubectl mta dns`: a SendingDomain's records as zone-file lines, ready to paste."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TXT_CHUNK = 255  # one TXT character-string holds at most 255 bytes (RFC 1035 3.3); longer values are split
TTL = 3600


def txt_rdata(value: str) -> str:
    chunks = [value[i:i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)] or [""]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


def zone_lines(records: Sequence[dict[str, Any]]) -> str:
    """One line per record, with a comment naming its purpose and whether DNS already has it."""
    lines = []
    for record in records:
        rtype = record.get("type", "TXT")
        rdata = txt_rdata(record["value"]) if rtype == "TXT" else f"{record['value'].rstrip('.')}."
        state = "published" if record.get("verified") else "not found in DNS yet"
        lines.append(f"; {record.get('purpose', '')}: {state}")
        lines.append(f"{record['name'].rstrip('.')}.\t{TTL}\tIN\t{rtype}\t{rdata}")
    return "\n".join(lines)
