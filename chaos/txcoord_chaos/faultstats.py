"""Which fault cost what: per kind of fault, how many windows, and the transfers that were
in flight during one of them, with their outcomes. Pure, like the checker.

A kind is the fault, its direction and what it hit, by role: ``partition coordinator->etcd``,
``cut/down coordinator->etcd``, ``pause coordinator > lease``. Events an ``all(...)`` target
fired together (a coordinator cut off from all three etcd members) are one window. A
transfer counts for a kind when its call overlapped any of that kind's windows; it counts
once per kind, and under every kind it overlapped. One row is derived rather than fired:
the spans when no coordinator could serve at all (:func:`no_coordinator`), for the
transfers no client could have had answered in those spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from .checker import Report, Transfer, merge_windows

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


NO_COORDINATOR = "no coordinator serving (each paused, killed or cut off)"
# What takes a coordinator out for its clients: the process stopped, the client's link to
# it, or its links to every etcd member, carrying nothing at least one way. Latency,
# bandwidth and loss only slow it; one etcd member lost, it moves to another.
_PROCESS_OUT = frozenset({"pause", "kill", "isolate"})
_LINK_OUT = frozenset({"partition", "drop", "reject", "cut"})

Span = tuple[float, float]


@dataclass(frozen=True)
class Applied:
    """One applied event, as :func:`no_coordinator` reads it."""

    kind: str
    target: str  # "c1", "client->c2", "c1->etcd3", ...
    started_at: float
    applied_at: float
    reverted_at: float


def no_coordinator(events: Iterable[Applied], coordinators: Sequence[str],
                   members: Sequence[str]) -> list[Window]:
    """The spans when every coordinator was out at once: no start could be answered by
    anyone, whatever the client did. A transfer overlapping one may be unservable."""
    events = list(events)
    spans = [_out_spans(events, c, members) for c in coordinators]
    both = spans[0] if spans else []
    for other in spans[1:]:
        both = _intersect(both, other)
    return [Window(NO_COORDINATOR, start, start, end) for start, end in both]


def _out_spans(events: Sequence[Applied], coordinator: str, members: Sequence[str]) -> list[Span]:
    own = [(e.applied_at, e.reverted_at) for e in events
           if (e.target == coordinator and e.kind in _PROCESS_OUT)
           or (e.target == f"client->{coordinator}" and e.kind in _LINK_OUT)]
    cut: list[Span] | None = None
    for member in members:  # out of etcd while the link to every member carries nothing
        link = merge_windows((e.applied_at, e.reverted_at) for e in events
                             if e.target == f"{coordinator}->{member}" and e.kind in _LINK_OUT)
        cut = link if cut is None else _intersect(cut, link)
    return merge_windows([*own, *(cut or [])])


def _intersect(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Both merged and sorted."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


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
