"""CPU and memory of a process and its descendants, read from /proc."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["cpu_seconds", "descendants", "rss_kib"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may hold spaces; the fields after it are fixed.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(_stat_fields(int(entry.name))[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid`, its live descendants and the children they reaped."""
    ticks = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            fields = _stat_fields(each)
            # utime, stime, cutime, cstime are fields 14-17 of proc(5); 12-15 after the name.
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / _CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and its descendants, from VmRSS."""
    total = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total
