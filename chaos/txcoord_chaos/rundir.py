"""A run's folder read back: summary.json and events.jsonl as plain series per mode.

The report's PNGs and the console's pages both draw from this, so a picture in report.md
and one in the browser always show the same data. Pure apart from reading the two files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Call:
    """One transfer as the client saw it (absolute times, seconds)."""

    started_at: float
    ended_at: float
    told: str  # ok / failed / unknown


@dataclass(frozen=True)
class FaultWindow:
    label: str  # "partition c1->etcd1", "kill orders", "latency/up c->accounts"
    applied_at: float
    reverted_at: float | None


@dataclass(frozen=True)
class Read:
    """A read of the databases during the run: was money conserved right then?"""

    at: float
    consistent: bool
    delta: int


@dataclass
class ModeSeries:
    calls: list[Call] = field(default_factory=list)
    faults: list[FaultWindow] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    ttc_s: list[float] = field(default_factory=list)  # per transfer, once settled
    recorded: set[str] = field(default_factory=set)  # the kinds of lines this mode has

    @property
    def t0(self) -> float:
        """The mode's first call: plots count seconds from here."""
        return min((c.started_at for c in self.calls), default=0.0)


@dataclass(frozen=True)
class RunData:
    name: str
    summary: Mapping[str, Any]
    modes: Mapping[str, ModeSeries]

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "?"))

    def rows(self) -> Mapping[str, Mapping[str, Any]]:
        rows = self.summary.get("modes") or {}
        return rows if isinstance(rows, Mapping) else {}


def fault_label(event: Mapping[str, Any]) -> str:
    kind, direction = str(event.get("kind", "?")), str(event.get("direction", "both"))
    return f"{kind if direction in ('both', '') else f'{kind}/{direction}'} {event.get('target', '?')}"


def load(folder: Path) -> RunData:
    """The run in ``folder``; raises OSError or ValueError when summary.json is unreadable.
    A missing events.jsonl (a run that failed early) gives empty series."""
    summary = json.loads((folder / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise ValueError("summary.json is not an object")
    events = folder / "events.jsonl"
    lines = _lines(events.read_text().splitlines()) if events.exists() else []
    return RunData(folder.name, summary, series(lines, list(summary.get("modes") or {})))


def _lines(texts: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for text in texts:
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run: the rest still plots
        if isinstance(line, dict):
            out.append(line)
    return out


def series(lines: Iterable[Mapping[str, Any]], modes: list[str]) -> dict[str, ModeSeries]:
    """Per mode. Fault lines of runs before faults carried their mode follow the transfers
    of the mode they belong to (the runner writes each mode's transfers, then its faults)."""
    out: dict[str, ModeSeries] = {m: ModeSeries() for m in modes}
    current = modes[0] if modes else ""
    for line in lines:
        mode = str(line.get("mode") or current)
        if line.get("type") == "transfer":
            current = mode
        _add(out.setdefault(mode, ModeSeries()), line)
    return out


def _add(into: ModeSeries, line: Mapping[str, Any]) -> None:
    kind = str(line.get("type"))
    into.recorded.add(kind)
    if kind == "transfer":
        into.calls.append(Call(float(line["started_at"]), float(line["ended_at"]), str(line["told"])))
    elif kind == "fault":
        reverted = line.get("reverted_at")
        into.faults.append(FaultWindow(fault_label(line.get("event") or {}), float(line["applied_at"]),
                                       None if reverted is None else float(reverted)))
    elif kind == "read":
        into.reads.append(Read(float(line["at"]), bool(line["consistent"]), int(line.get("delta", 0))))
    elif kind == "consistency":
        into.ttc_s.append(float(line["ttc_s"]))


def runs_under(root: Path) -> list[Path]:
    """Run folders (holding summary.json) directly under ``root``, newest first; ``root``
    itself when it is one."""
    found = [p for p in root.iterdir() if (p / "summary.json").is_file()] if root.is_dir() else []
    if (root / "summary.json").is_file():
        found.append(root)
    return sorted(found, key=lambda p: (p / "summary.json").stat().st_mtime, reverse=True)
