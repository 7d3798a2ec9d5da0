"""The checker: histories with known violations are caught, one by one; a clean history
is clean; percentiles and fault-window bucketing are right."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pytest
from txcoord_chaos import faultstats
from txcoord_chaos.checker import (
    Observation,
    Run,
    Snapshot,
    Told,
    Transfer,
    check,
    check_all,
    merge_windows,
    percentile,
    phase_of,
    phase_stats,
    stats,
)

INITIAL = {"a": 1000, "b": 1000}
TOTAL = 2000


def transfer(tid: str, told: Told = "ok", amount: int = 10, account: str = "a",
             start: float = 0.0, end: float | None = None, mode: str = "saga") -> Transfer:
    return Transfer(tid, mode, account, amount, told, start, start + 0.1 if end is None else end)


def settled(transfers: Sequence[Transfer], applied: Sequence[str]) -> Snapshot:
    """A consistent final state where exactly the transfers in ``applied`` took effect."""
    balances = dict(INITIAL)
    debits: dict[str, list[int]] = {}
    orders: dict[str, list[int]] = {}
    for t in transfers:
        if t.id in applied:
            balances[t.account] -= t.amount
            debits[t.id] = [t.amount]
            orders[t.id] = [t.amount]
    return Snapshot(balances, debits, orders)


def run(transfers: Sequence[Transfer], snapshot: Snapshot, **extra: object) -> Run:
    return Run("saga", transfers, snapshot, TOTAL, **extra)  # type: ignore[arg-type]


def with_changes(snap: Snapshot, balances: Mapping[str, int] | None = None,
                 debits: Mapping[str, list[int]] | None = None,
                 orders: Mapping[str, list[int]] | None = None) -> Snapshot:
    return Snapshot({**snap.balances, **(balances or {})}, {**snap.debits, **(debits or {})},
                    {**snap.orders, **(orders or {})})


HISTORY = [transfer("t1"), transfer("t2", "failed"), transfer("t3", "unknown", account="b"),
           transfer("t4", amount=25, account="b")]
CLEAN = settled(HISTORY, applied=["t1", "t3", "t4"])


def test_clean_history_has_no_violations() -> None:
    report = check(run(HISTORY, CLEAN))
    assert (report.issued, report.ok, report.failed, report.unknown) == (4, 2, 1, 1)
    assert report.violations == ()
    assert report.lost == () and report.phantom == ()
    assert report.unknown_outcomes == {"applied": 1, "absent": 0, "partial": 0}
    assert report.clean


# CLEAN: a = 990, b = 965, orders 10 + 10 + 25 = 45; total 2000.
@pytest.mark.parametrize(("snapshot", "expected"), [
    (with_changes(CLEAN, balances={"a": 995}), [("money_not_conserved", None)]),
    (with_changes(CLEAN, orders={"t1": []}, balances={"a": 1000}), [("debit_without_order", "t1")]),
    (with_changes(CLEAN, debits={"t2": []}, orders={"t2": [10]}, balances={"a": 980}),
     [("order_without_debit", "t2")]),
    (with_changes(CLEAN, debits={"t1": [10, 10]}), [("duplicate_debit", "t1")]),  # a ledger twin
    (with_changes(CLEAN, debits={"t1": [10, 10]}, balances={"a": 980}),  # debited twice for real
     [("money_not_conserved", None), ("duplicate_debit", "t1")]),
    (with_changes(CLEAN, orders={"t4": [25, 25]}, balances={"b": 940}), [("duplicate_order", "t4")]),
    (with_changes(CLEAN, balances={"a": -10, "b": 1965}), [("negative_balance", None)]),
    (with_changes(CLEAN, debits={"t4": [52]}), [("amount_mismatch", "t4")]),
])
def test_each_known_violation_is_caught(snapshot: Snapshot, expected: list[tuple[str, str | None]]) -> None:
    report = check(run(HISTORY, snapshot))
    assert [(v.kind, v.transfer_id) for v in report.violations] == expected
    assert not report.clean


def test_money_drift_is_reported_with_its_sign() -> None:
    snapshot = with_changes(CLEAN, orders={"t1": []})  # debit stays, order gone: money vanished
    kinds = {v.kind: v.detail for v in check(run(HISTORY, snapshot)).violations}
    assert kinds.keys() == {"money_not_conserved", "debit_without_order"}
    assert "(-10)" in kinds["money_not_conserved"]


def test_lost_and_phantom() -> None:
    # t1 told ok but its order never landed; t2 told failed but was debited and ordered.
    snapshot = with_changes(CLEAN, orders={"t1": [], "t2": [10]}, debits={"t2": [10]}, balances={"a": 980})
    report = check(run(HISTORY, snapshot))
    assert report.lost == ("t1",)
    assert report.phantom == ("t2",)


def test_unknown_outcomes_are_neither_lost_nor_phantom() -> None:
    history = [transfer("u1", "unknown"), transfer("u2", "unknown"), transfer("u3", "unknown")]
    snapshot = Snapshot({"a": 1000 - 10 - 10, "b": 1000}, {"u1": [10], "u2": [10]}, {"u1": [10]})
    report = check(run(history, snapshot))
    assert report.lost == () and report.phantom == ()
    assert report.unknown_outcomes == {"applied": 1, "absent": 1, "partial": 1}
    assert [v.kind for v in report.violations] == ["money_not_conserved", "debit_without_order"]


def test_coordinator_leftovers_make_a_run_unclean() -> None:
    snapshot = Snapshot(CLEAN.balances, CLEAN.debits, CLEAN.orders, not_terminal=["t9"],
                        in_doubt={"t9/accounts": 2.0, "t9/orders": 4.0})
    report = check(run(HISTORY, snapshot))
    assert report.not_terminal == ("t9",) and not report.clean
    assert (report.in_doubt_s.count, report.in_doubt_s.p50, report.in_doubt_s.max) == (2, 2.0, 4.0)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50, 99, 100)
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([1.0, 2.0], 0) == 1.0
    with pytest.raises(ValueError):
        percentile([], 50)
    assert stats([]).p50 is None and stats([]).count == 0


def test_time_to_consistency_counts_from_the_answer() -> None:
    history = [transfer("t1", end=1.0), transfer("t2", end=1.0), transfer("t3", end=1.0)]
    report = check(run(history, settled(history, ["t1", "t2", "t3"]),
                       consistent_at={"t1": 0.5, "t2": 3.0}))
    ttc = report.time_to_consistency_s
    assert (ttc.count, ttc.p50, ttc.max) == (2, 0.0, 2.0)
    assert report.never_consistent == 1
    untracked = check(run(history, settled(history, ["t1", "t2", "t3"])))
    assert untracked.time_to_consistency_s.count == 0 and untracked.never_consistent == 0


def test_windows_merge_and_bucket_by_start_time() -> None:
    windows = merge_windows([(30, 40), (10, 20), (15, 25), (25, 26)])
    assert windows == [(10, 26), (30, 40)]
    assert phase_of(5, windows) == "before"
    assert phase_of(10, windows) == "during"
    assert phase_of(26, windows) == "after"  # end is exclusive; gaps count as recovery
    assert phase_of(35, windows) == "during"
    assert phase_of(50, windows) == "after"
    assert phase_of(50, []) == "before"


def test_phase_throughput_and_latency() -> None:
    history = [transfer(f"b{i}", start=i, end=i + 0.1) for i in range(10)]  # 0..9, before
    history += [transfer(f"d{i}", start=10 + i, end=10 + i + 2.0, told="failed") for i in range(5)]
    history += [transfer("d5", start=14.5, end=15.0)]
    history += [transfer(f"a{i}", start=15 + i, end=15 + i + 0.2) for i in range(5)]
    phases = phase_stats(history, [(10, 15)], started_at=0, ended_at=20)
    before, during, after = phases["before"], phases["during"], phases["after"]
    assert (before.issued, before.ok, before.seconds, before.throughput_ok_per_s) == (10, 10, 10, 1.0)
    assert (during.issued, during.ok, during.seconds) == (6, 1, 5)
    assert during.throughput_ok_per_s == pytest.approx(0.2)
    assert during.latency_s.p50 == pytest.approx(2.0) and during.latency_s.max == pytest.approx(2.0)
    assert (after.issued, after.ok, after.seconds) == (5, 5, 5)
    assert after.latency_s.p99 == pytest.approx(0.2)


def test_run_span_defaults_to_the_transfers() -> None:
    history = [transfer("x", start=2.0, end=3.0), transfer("y", start=6.0, end=8.0)]
    phases = phase_stats(history, [(4.0, 5.0)])
    assert {p: s.seconds for p, s in phases.items()} == {"before": 2.0, "during": 1.0, "after": 3.0}


def test_reads_during_the_run() -> None:
    observations = [Observation(1.0, True), Observation(2.0, False, delta=-10),
                    Observation(3.0, False, delta=40), Observation(4.0, False, delta=-40),
                    Observation(5.0, True)]
    report = check(run(HISTORY, CLEAN, observations=observations))
    assert report.temporary_violation_fraction == pytest.approx(0.6)
    assert report.first_violation == Observation(2.0, False, -10)
    assert report.worst_violation == Observation(3.0, False, 40)  # ties go to the earliest
    assert check(run(HISTORY, CLEAN)).temporary_violation_fraction is None


def test_modes_are_kept_apart() -> None:
    with pytest.raises(ValueError, match="2pc"):
        check(run([transfer("t1"), transfer("t2", mode="2pc")], CLEAN))
    reports = check_all([run(HISTORY, CLEAN), Run("2pc", [], Snapshot(INITIAL, {}, {}), TOTAL)])
    assert list(reports) == ["saga", "2pc"]
    assert reports["2pc"].issued == 0 and reports["2pc"].clean


def test_report_is_json_ready() -> None:
    snapshot = with_changes(CLEAN, debits={"t1": [10, 10]})
    report = check(run(HISTORY, snapshot, observations=[Observation(1.0, False, 5)],
                       consistent_at={"t1": 1.0}, fault_windows=[(0.05, 1.0)]))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["mode"] == "saga"
    assert data["violation_counts"] == {"duplicate_debit": 1}
    assert data["violations"][0]["transfer_id"] == "t1"
    assert data["phases"]["during"]["issued"] == 0
    assert data["first_violation"] == {"at": 1.0, "consistent": False, "delta": 5}
    assert data["clean"] is False and data["lost_count"] == 0


# -- which fault cost what ---------------------------------------------------------------------


def test_fault_kinds_name_the_role_direction_and_a_pause_past_the_lease() -> None:
    assert faultstats.kind_of("partition", "c1->etcd2", "both", 8, 5) == "partition coordinator->etcd"
    assert faultstats.kind_of("cut", "c2->etcd1", "down", 8, 5) == "cut/down coordinator->etcd"
    assert faultstats.kind_of("latency", "c->orders", "up", 3, 5) == "latency/up coordinator->service"
    assert faultstats.kind_of("drop", "accounts->pg", "both", 3, 5) == "drop service->database"
    assert faultstats.kind_of("pause", "c1", "both", 10, 5) == "pause coordinator > lease"
    assert faultstats.kind_of("pause", "c1", "both", 3, 5) == "pause coordinator"
    assert faultstats.kind_of("kill", "etcd3", "both", 10, 5) == "kill etcd"
    assert faultstats.kind_of("drop", "c1->etcd1", "up", 8, 5, together=3) == \
        "drop/up coordinator->etcd (3 at once)"


def test_by_kind_counts_windows_fired_together_once_and_overlapping_transfers() -> None:
    history = [transfer("in", start=1.0, end=2.5), transfer("edge", "unknown", start=4.9, end=6.0),
               transfer("out", start=7.0, end=7.5), transfer("bad", "failed", start=9.0, end=9.5)]
    snap = settled(history, applied=["in", "out"])
    snap = Snapshot(snap.balances, {**snap.debits, "bad": [10]},  # told failed, debit kept
                    snap.orders)
    report = check(Run("saga", history, snap, TOTAL))
    cut_off = [faultstats.Window("partition coordinator->etcd", 2.0, 2.0, 5.0) for _ in range(3)]
    later = [faultstats.Window("partition coordinator->etcd", 8.5, 8.6, 9.2),
             faultstats.Window("kill etcd", 0.0, 0.0, 0.5)]
    rows = faultstats.by_kind(history, [*cut_off, *later], report)
    assert list(rows) == ["kill etcd", "partition coordinator->etcd"]
    assert rows["kill etcd"].transfers == 0 and rows["kill etcd"].windows == 1
    part = rows["partition coordinator->etcd"]
    assert (part.windows, part.transfers, part.ok, part.failed, part.unknown) == (2, 3, 1, 1, 1)
    assert (part.violations, part.phantom, part.lost) == (1, 1, 0)
    assert "| partition coordinator->etcd | 2 | 3 | 1 | 1 | 1 | 1 | 0 | 1 |" in \
        faultstats.table({k: r.to_dict() for k, r in rows.items()})


def test_no_coordinator_is_when_every_coordinator_is_out_at_once() -> None:
    """A coordinator is out while paused, killed, cut from the client, or cut from every
    etcd member; the derived window is when all are out together."""
    A = faultstats.Applied
    events = [
        A("pause", "c1", 10, 10.0, 20.0),
        *(A("partition", f"c2->etcd{m}", 15, 15.0, 25.0) for m in (1, 2, 3)),  # c2 out 15-25
        A("partition", "c2->etcd1", 30, 30.0, 40.0),  # one member: c2 moves to another
        A("pause", "c1", 30, 30.0, 40.0),
        A("latency", "client->c2", 33, 33.0, 36.0),  # slow, not out
        A("partition", "client->c2", 38, 38.0, 45.0),  # the client cannot reach c2: out
        A("kill", "etcd1", 38, 38.0, 39.0),  # one member down: nobody is out for it
    ]
    windows = faultstats.no_coordinator(events, ("c1", "c2"), ("etcd1", "etcd2", "etcd3"))
    assert [(w.applied_at, w.reverted_at) for w in windows] == [(15.0, 20.0), (38.0, 40.0)]
    assert {w.kind for w in windows} == {faultstats.NO_COORDINATOR}
    # Transfers overlapping it count under it like under any fault.
    history = [transfer("lost-cause", "unknown", start=16.0, end=24.0),
               transfer("fine", start=26.0, end=27.0)]
    rows = faultstats.by_kind(history, windows, check(Run("saga", history,
                                                          settled(history, ["fine"]), TOTAL)))
    assert rows[faultstats.NO_COORDINATOR].transfers == 1
    assert rows[faultstats.NO_COORDINATOR].unknown == 1
