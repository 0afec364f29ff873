"""Where a peer's sync syscalls go and how long they take (pure): from ``strace -y -T`` lines
(bench.frontdoor.syscalls), calls and seconds per target — the directory synced, or the directory of the
file synced — relative to the bench's temp dir."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.frontdoor.syscalls import SYNC_SYSCALLS

_CALLS = "|".join(SYNC_SYSCALLS)
# "1234 fsync(5</tmp/x/relay-spool/tmp/0123.msg>) = 0 <0.000812>", or the call "<unfinished ...>" and,
# later, "1234 <... fsync resumed>) = 0 <0.000812>" (another thread of the tree ran in between).
_LINE = re.compile(rf"^(\d+)\s+(?:({_CALLS})\((?:\d+<([^>]*)>)?|<\.\.\. (?:{_CALLS}) resumed>)(.*)$",
                   re.MULTILINE)
_DURATION = re.compile(r"<(\d+(?:\.\d+)?)>\s*$")


@dataclass
class SyncUse:
    calls: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)  # time inside the call (strace -T)


def sync_use(log_text: str, root: str, is_dir: Callable[[str], bool]) -> SyncUse:
    """Targets read ``"fsync dir relay-spool/active"``, ``"fdatasync file in relay-spool/slots"`` …"""
    use = SyncUse()
    unfinished: dict[str, str] = {}  # pid → target of its call still in progress
    for pid, call, path, rest in _LINE.findall(log_text):
        if call:
            target = _target(call, path, root, is_dir)
            use.calls[target] += 1
            if "<unfinished ...>" in rest:
                unfinished[pid] = target
                continue
        elif (target := unfinished.pop(pid, "")) == "":
            continue  # resumed half of a call before the slice we were given
        if found := _DURATION.search(rest):
            use.seconds[target] += float(found.group(1))
    return use


def _target(call: str, path: str, root: str, is_dir: Callable[[str], bool]) -> str:
    if not path:
        return f"{call} (no descriptor)"
    where = path.removeprefix(root.rstrip("/") + "/")
    if is_dir(path):
        return f"{call} dir {where}"
    return f"{call} file in {where.rpartition('/')[0] or '.'}"
