"""CPU time spent by each process of a benchmark over a measured interval (Linux /proc).

On a 2-core machine every process of the benchmark competes for the same CPUs, so a
protocol's throughput is bounded by the CPU it costs per transaction, summed over all of
them. These figures say where that CPU goes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
SERVER_NAMES = {"postgres": "postgresql", "mariadbd": "mariadb", "mysqld": "mariadb",
                "etcd": "etcd"}


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle, summed over every CPU, since boot."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / TICK


def servers_by_name() -> dict[str, list[int]]:
    """Database servers (every backend) and etcd members running on this machine."""
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm in SERVER_NAMES:
            found.setdefault(SERVER_NAMES[comm], []).append(int(entry.name))
    return found


class CpuMeter:
    """``groups`` maps a label to a function listing its pids at the time of reading
    (database backends come and go). The benchmark's own process is ``self``."""

    def __init__(self, groups: Mapping[str, Callable[[], list[int]]]) -> None:
        self._groups = dict(groups)
        self._start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        now = {name: sum(process_seconds(p) for p in pids()) for name, pids in self._groups.items()}
        times = os.times()
        now["load generator"] = times.user + times.system
        now["machine"] = machine_busy_seconds()
        return now

    def start(self) -> None:
        self._start = self._read()

    def ms_per(self, count: int) -> dict[str, float]:
        """CPU milliseconds per unit of work since ``start``, per group."""
        end = self._read()
        return {name: (end[name] - self._start.get(name, 0.0)) * 1000 / count for name in end}


def format_row(label: str, ms: Mapping[str, float], names: list[str]) -> str:
    cells = "".join(f"{ms.get(n, 0.0):>10.2f}" for n in names)
    return f"{label:<26}{cells}"
