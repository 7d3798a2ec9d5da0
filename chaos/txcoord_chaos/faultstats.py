"""Which fault cost what: per kind of fault, how many windows, and the transfers that were
in flight during one of them, with their outcomes. Pure, like the checker.

A kind is the fault, its direction and what it hit, by role: ``partition coordinator->etcd``,
``cut/down coordinator->etcd``, ``pause coordinator > lease``. Events an ``all(...)`` target
fired together (a coordinator cut off from all three etcd members) are one window. A
transfer counts for a kind when its call overlapped any of that kind's windows; it counts
once per kind, and under every kind it overlapped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from .checker import Report, Transfer

ROLES = {"c1": "coordinator", "c2": "coordinator", "accounts": "service", "orders": "service",
         "pg": "database", "maria": "database", "client": "client", "c": "coordinator"}


@dataclass(frozen=True)
class Window:
    kind: str  # see :func:`kind_of`
    started_at: float  # the event's planned start: events fired together share it
    applied_at: float  # when it was in force, on the transfers' clock
    reverted_at: float


@dataclass(frozen=True)
class FaultRow:
    windows: int
    transfers: int
    ok: int
    failed: int
    unknown: int
    violations: int  # transfers with an invariant violation of their own
    lost: int
    phantom: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def role(name: str) -> str:
    """``c1`` -> coordinator, ``etcd2`` -> etcd, ``c->orders`` -> coordinator->service."""
    if "->" in name:
        return "->".join(role(end) for end in name.split("->"))
    return "etcd" if name.startswith("etcd") else ROLES.get(name, name)


def kind_of(kind: str, target: str, direction: str, duration_s: float, lease_s: float,
            together: int = 1) -> str:
    """``together``: how many links of this role the event hit at once (an ``all(...)``)."""
    text = kind if direction == "both" or "->" not in target else f"{kind}/{direction}"
    text = f"{text} {role(target)}"
    if kind in ("pause", "kill", "isolate") and role(target) == "coordinator" and duration_s > lease_s:
        text += " > lease"  # long enough for the other coordinator to take its work over
    if together > 1:
        text += f" ({together} at once)"  # e.g. a coordinator cut off from every etcd member
    return text


def by_kind(transfers: Sequence[Transfer], windows: Iterable[Window],
            report: Report) -> dict[str, FaultRow]:
    """One row per kind of fault, sorted by kind."""
    grouped: dict[str, list[Window]] = {}
    for w in windows:
        grouped.setdefault(w.kind, []).append(w)
    wrong = {v.transfer_id for v in report.violations if v.transfer_id}
    return {kind: _row(transfers, found, wrong, set(report.lost), set(report.phantom))
            for kind, found in sorted(grouped.items())}


def _row(transfers: Sequence[Transfer], windows: list[Window], wrong: set[str], lost: set[str],
         phantom: set[str]) -> FaultRow:
    hit = [t for t in transfers
           if any(t.started_at < w.reverted_at and w.applied_at < t.ended_at for w in windows)]
    told = {o: sum(1 for t in hit if t.told == o) for o in ("ok", "failed", "unknown")}
    return FaultRow(windows=len({w.started_at for w in windows}), transfers=len(hit), **told,
                    violations=sum(1 for t in hit if t.id in wrong),
                    lost=sum(1 for t in hit if t.id in lost),
                    phantom=sum(1 for t in hit if t.id in phantom))


def table(rows: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Markdown lines for one mode's rows."""
    lines = ["| fault | windows | transfers | ok | failed | unknown | violations | lost | phantom |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, r in rows.items():
        cells = [r["windows"], r["transfers"], r["ok"], r["failed"], r["unknown"],
                 r["violations"], r["lost"], r["phantom"]]
        lines.append(f"| {kind} | " + " | ".join(str(c) for c in cells) + " |")
    return lines
