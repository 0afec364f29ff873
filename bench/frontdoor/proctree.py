"""CPU time of a process tree from /proc, so that a peer's cost per message can be reported: Postfix is
many processes, the relay two (the front door and its delivery process)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone between listing and reading
        return None
    return text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def children(pid: int) -> list[int]:
    return _children_map().get(pid, [])


def descendants(root: int) -> list[int]:
    children = _children_map()
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    """User + system time of ``root`` and its descendants, including the reaped children they waited for
    (cutime/cstime), so processes that exit during a run still count."""
    ticks = 0
    for pid in [root, *descendants(root)]:
        if fields := _stat_fields(pid):
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / _TICK
