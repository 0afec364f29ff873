"""Where a peer's sync syscalls go (pure): from ``strace -y`` lines (bench.frontdoor.syscalls), a count per
target — the directory synced, or the directory of the file synced — relative to the bench's temp dir."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from bench.frontdoor.syscalls import SYNC_SYSCALLS

# "1234 fsync(5</tmp/mta-delivery-x/relay-spool/active/0123.msg>) = 0" (or "<unfinished ...>")
_CALL = re.compile(rf"^\d+\s+({'|'.join(SYNC_SYSCALLS)})\((?:\d+<([^>]*)>)?", re.MULTILINE)


def sync_targets(log_text: str, root: str, is_dir: Callable[[str], bool]) -> Counter[str]:
    """``"fsync dir relay-spool/active"``, ``"fsync file in postfix/queue/incoming"`` and so on."""
    found: Counter[str] = Counter()
    for call, path in _CALL.findall(log_text):
        if not path:
            found[f"{call} (no descriptor)"] += 1
            continue
        where = path.removeprefix(root.rstrip("/") + "/")
        if is_dir(path):
            found[f"{call} dir {where}"] += 1
        else:
            found[f"{call} file in {where.rpartition('/')[0] or '.'}"] += 1
    return found
