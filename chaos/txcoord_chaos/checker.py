"""The invariant checker: a run's history and final state in, a per-mode report out.

Pure (no I/O): the runner reads the databases and the coordinator and hands the facts
over as dataclasses. One ``Run`` per mode (none, saga, 2pc), each with its own databases'
final ``Snapshot``.

Semantics:
- invariants hold on the final state: money conserved (balances + orders = initial
  total), a debit exists exactly when its order exists, no transfer debited or ordered
  twice, no negative balance, and effects carry the amount issued;
- ``lost``: told ok, but the debit or the order is missing; ``phantom``: told failed, but
  a debit or an order exists; ``unknown`` outcomes are neither, and are broken down into
  applied / absent / partial;
- time to consistency of a transfer: from the moment the client got its answer to the
  moment its effects were seen consistent (0 if before the answer);
- phases: a transfer is "during" if it started inside a fault window, "before" if it
  started before the first window, "after" otherwise (recovery, including the gaps
  between windows). Throughput counts ok transfers per second of the phase; latency is
  the call as the client saw it, whatever the answer.
- percentiles are nearest-rank: always a value that was measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Told = Literal["ok", "failed", "unknown"]
ViolationKind = Literal[
    "money_not_conserved", "debit_without_order", "order_without_debit", "duplicate_debit",
    "duplicate_order", "negative_balance", "amount_mismatch",
]
PHASES = ("before", "during", "after")


@dataclass(frozen=True)
class Transfer:
    """One transfer as the workload issued it and what the client was told."""

    id: str
    mode: str
    account: str
    amount: int
    told: Told
    started_at: float
    ended_at: float

    @property
    def latency_s(self) -> float:
        return self.ended_at - self.started_at


@dataclass(frozen=True)
class Snapshot:
    """The final state: what the databases and the coordinator hold after the run."""

    balances: Mapping[str, int]
    debits: Mapping[str, Sequence[int]]  # transfer id -> debit amounts in the accounts ledger
    orders: Mapping[str, Sequence[int]]  # transfer id -> order amounts
    not_terminal: Sequence[str] = ()  # gids the coordinator has not finished
    in_doubt: Mapping[str, float] = field(default_factory=dict)  # 2PC branch -> seconds in doubt


@dataclass(frozen=True)
class Observation:
    """A read during the run; ``delta`` = total seen - initial total, when known."""

    at: float
    consistent: bool
    delta: int = 0


@dataclass(frozen=True)
class Run:
    """Everything the checker needs about one mode's run."""

    mode: str
    transfers: Sequence[Transfer]
    snapshot: Snapshot
    initial_total: int
    observations: Sequence[Observation] = ()
    consistent_at: Mapping[str, float] | None = None  # transfer id -> seen consistent at
    fault_windows: Sequence[tuple[float, float]] = ()
    started_at: float | None = None  # default: the first transfer's start
    ended_at: float | None = None  # default: the last transfer's end


@dataclass(frozen=True)
class Violation:
    kind: ViolationKind
    transfer_id: str | None
    detail: str


@dataclass(frozen=True)
class Stats:
    """Distribution of a measure; ``None`` fields when there were no samples."""

    count: int
    p50: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True)
class PhaseStats:
    issued: int
    ok: int
    seconds: float
    throughput_ok_per_s: float | None
    latency_s: Stats


@dataclass(frozen=True)
class Report:
    mode: str
    issued: int
    ok: int
    failed: int
    unknown: int
    violations: tuple[Violation, ...]
    lost: tuple[str, ...]
    phantom: tuple[str, ...]
    unknown_outcomes: Mapping[str, int]  # applied / absent / partial
    not_terminal: tuple[str, ...]
    in_doubt_s: Stats
    time_to_consistency_s: Stats
    never_consistent: int  # transfers never seen consistent (when that was tracked)
    phases: Mapping[str, PhaseStats]
    temporary_violation_fraction: float | None
    first_violation: Observation | None
    worst_violation: Observation | None

    @property
    def clean(self) -> bool:
        """No invariant broken, nothing lost, no phantom, nothing left unfinished."""
        return not (self.violations or self.lost or self.phantom or self.not_terminal)

    def violation_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for v in self.violations:
            counts[v.kind] = counts.get(v.kind, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(clean=self.clean, violation_counts=self.violation_counts(),
                    lost_count=len(self.lost), phantom_count=len(self.phantom),
                    not_terminal_count=len(self.not_terminal))
        return data


# -- the checks --------------------------------------------------------------------------


def check(run: Run) -> Report:
    """Check one mode's run."""
    strays = sorted({t.mode for t in run.transfers} - {run.mode})
    if strays:
        raise ValueError(f"run {run.mode!r} holds transfers of other modes: {strays}")
    transfers, snap = run.transfers, run.snapshot
    told = {outcome: sum(1 for t in transfers if t.told == outcome)
            for outcome in ("ok", "failed", "unknown")}
    ttc, never = time_to_consistency(transfers, run.consistent_at)
    return Report(
        mode=run.mode, issued=len(transfers), ok=told["ok"], failed=told["failed"],
        unknown=told["unknown"],
        violations=tuple(invariant_violations(transfers, snap, run.initial_total)),
        lost=tuple(t.id for t in transfers if t.told == "ok" and not _complete(t.id, snap)),
        phantom=tuple(t.id for t in transfers if t.told == "failed" and _touched(t.id, snap)),
        unknown_outcomes=_unknown_outcomes(transfers, snap),
        not_terminal=tuple(snap.not_terminal),
        in_doubt_s=stats(snap.in_doubt.values()),
        time_to_consistency_s=ttc, never_consistent=never,
        phases=phase_stats(transfers, run.fault_windows, run.started_at, run.ended_at),
        temporary_violation_fraction=_violation_fraction(run.observations),
        first_violation=_first_violation(run.observations),
        worst_violation=_worst_violation(run.observations),
    )


def check_all(runs: Iterable[Run]) -> dict[str, Report]:
    """Reports by mode, in the order the runs were given."""
    return {run.mode: check(run) for run in runs}


def invariant_violations(transfers: Sequence[Transfer], snap: Snapshot,
                         initial_total: int) -> list[Violation]:
    found = _money(snap, initial_total) + _negative_balances(snap)
    issued = {t.id: t for t in transfers}
    for tid in sorted(set(snap.debits) | set(snap.orders)):
        debits, orders = list(snap.debits.get(tid, ())), list(snap.orders.get(tid, ()))
        found += _pairing(tid, debits, orders)
        if tid in issued:
            found += _amounts(issued[tid], debits, orders)
    return found


def _money(snap: Snapshot, initial_total: int) -> list[Violation]:
    balances = sum(snap.balances.values())
    orders = sum(sum(amounts) for amounts in snap.orders.values())
    drift = balances + orders - initial_total
    if drift == 0:
        return []
    detail = (f"balances {balances} + orders {orders} = {balances + orders}, "
              f"expected {initial_total} ({drift:+d})")
    return [Violation("money_not_conserved", None, detail)]


def _negative_balances(snap: Snapshot) -> list[Violation]:
    return [Violation("negative_balance", None, f"account {account} has {balance}")
            for account, balance in sorted(snap.balances.items()) if balance < 0]


def _pairing(tid: str, debits: list[int], orders: list[int]) -> list[Violation]:
    found = []
    if debits and not orders:
        found.append(Violation("debit_without_order", tid, f"debited {debits}, no order"))
    if orders and not debits:
        found.append(Violation("order_without_debit", tid, f"order {orders}, no debit"))
    if len(debits) > 1:
        found.append(Violation("duplicate_debit", tid, f"debited {len(debits)} times: {debits}"))
    if len(orders) > 1:
        found.append(Violation("duplicate_order", tid, f"{len(orders)} orders: {orders}"))
    return found


def _amounts(transfer: Transfer, debits: list[int], orders: list[int]) -> list[Violation]:
    wrong = [a for a in debits + orders if a != transfer.amount]
    if not wrong:
        return []
    detail = f"issued {transfer.amount}, found debits {debits} and orders {orders}"
    return [Violation("amount_mismatch", transfer.id, detail)]


def _complete(tid: str, snap: Snapshot) -> bool:
    return bool(snap.debits.get(tid)) and bool(snap.orders.get(tid))


def _touched(tid: str, snap: Snapshot) -> bool:
    return bool(snap.debits.get(tid)) or bool(snap.orders.get(tid))


def _unknown_outcomes(transfers: Sequence[Transfer], snap: Snapshot) -> dict[str, int]:
    outcomes = {"applied": 0, "absent": 0, "partial": 0}
    for t in transfers:
        if t.told == "unknown":
            applied = _complete(t.id, snap)
            outcomes["applied" if applied else "partial" if _touched(t.id, snap) else "absent"] += 1
    return outcomes


# -- timing --------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of a non-empty sequence (p in 0..100)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def stats(values: Iterable[float]) -> Stats:
    samples = list(values)
    if not samples:
        return Stats(0, None, None, None)
    return Stats(len(samples), percentile(samples, 50), percentile(samples, 99), max(samples))


def time_to_consistency(transfers: Sequence[Transfer],
                        consistent_at: Mapping[str, float] | None) -> tuple[Stats, int]:
    """Seconds from the answer to consistency, and how many were never seen consistent."""
    if consistent_at is None:
        return stats(()), 0
    delays = [max(0.0, consistent_at[t.id] - t.ended_at) for t in transfers if t.id in consistent_at]
    never = sum(1 for t in transfers if t.id not in consistent_at)
    return stats(delays), never


def merge_windows(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, overlapping or touching windows joined."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def phase_of(started_at: float, windows: Sequence[tuple[float, float]]) -> str:
    """``windows`` merged; see the module doc for the rule."""
    if any(start <= started_at < end for start, end in windows):
        return "during"
    if not windows or started_at < windows[0][0]:
        return "before"
    return "after"


def phase_stats(transfers: Sequence[Transfer], fault_windows: Sequence[tuple[float, float]],
                started_at: float | None = None, ended_at: float | None = None) -> dict[str, PhaseStats]:
    windows = merge_windows(fault_windows)
    if started_at is None:
        started_at = min((t.started_at for t in transfers), default=0.0)
    if ended_at is None:
        ended_at = max((t.ended_at for t in transfers), default=started_at)
    seconds = _phase_seconds(windows, started_at, ended_at)
    grouped: dict[str, list[Transfer]] = {phase: [] for phase in PHASES}
    for t in transfers:
        grouped[phase_of(t.started_at, windows)].append(t)
    result = {}
    for phase, members in grouped.items():
        ok = sum(1 for t in members if t.told == "ok")
        length = seconds[phase]
        result[phase] = PhaseStats(issued=len(members), ok=ok, seconds=length,
                                   throughput_ok_per_s=ok / length if length > 0 else None,
                                   latency_s=stats(t.latency_s for t in members))
    return result


def _phase_seconds(windows: Sequence[tuple[float, float]], start: float, end: float) -> dict[str, float]:
    total = max(0.0, end - start)
    during = sum(max(0.0, min(e, end) - max(s, start)) for s, e in windows)
    before = total if not windows else min(total, max(0.0, windows[0][0] - start))
    return {"before": before, "during": during, "after": max(0.0, total - before - during)}


# -- reads during the run ----------------------------------------------------------------


def _violation_fraction(observations: Sequence[Observation]) -> float | None:
    if not observations:
        return None
    return sum(1 for o in observations if not o.consistent) / len(observations)


def _first_violation(observations: Sequence[Observation]) -> Observation | None:
    bad = [o for o in observations if not o.consistent]
    return min(bad, key=lambda o: o.at) if bad else None


def _worst_violation(observations: Sequence[Observation]) -> Observation | None:
    bad = [o for o in observations if not o.consistent]
    return min(bad, key=lambda o: (-abs(o.delta), o.at)) if bad else None  # ties: the earliest
