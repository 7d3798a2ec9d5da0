"""The fault matrix' table: summary rows in, rows, markdown and JSON out (pure; no
services), and its kinds' schedules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from txcoord_chaos import checker, faultstats, matrix
from txcoord_chaos.client import Outcome
from txcoord_chaos.nemesis import timeline
from txcoord_chaos.runner import ModeResult, _summary_row
from txcoord_chaos.serving import Answer, tally
from txcoord_chaos.topology import LINKS, PROCESSES
from txcoord_chaos.workload.services import OUT_OF_STOCK, Transfer

PAUSE = matrix.Kind("pause", "a coordinator paused", "pause:c1@every 20s for 10s from 3s")


def summary_row(told: list[tuple[str, str]], expected: dict[str, str], *,
                violations: bool = False, windows: int = 2) -> dict[str, Any]:
    """A mode's summary.json row as the runner writes it, for transfers t0, t1, ... told
    (told, detail); ``violations``: t0 was debited with no order."""
    plan = [Transfer(f"t{i}", "a", 10) for i in range(len(told))]
    outcomes = [Outcome(t, "saga", kind, 100.0 + i,  # type: ignore[arg-type]
                        100.5 + i + (7.5 if kind == "unknown" else 0), detail)
                for i, (t, (kind, detail)) in enumerate(zip(plan, told, strict=True))]
    transfers = [checker.Transfer(o.transfer.transfer_id, "saga", "a", 10, o.told, o.started_at,
                                  o.ended_at) for o in outcomes]
    debits = {t.id: [10] for t in transfers if t.told == "ok"}
    orders = dict(debits)
    if violations:
        debits["t0"], orders = [10], {k: v for k, v in orders.items() if k != "t0"}
    spent = 10 * len(debits)
    snapshot = checker.Snapshot({"a": 1_000 - spent}, debits, orders)
    report = checker.check(checker.Run("saga", transfers, snapshot, initial_total=1_000))
    fault = faultstats.FaultRow(windows, len(told), 0, 0, 0, 0, 0, 0)
    served = tally((Answer(o.transfer.transfer_id, o.told, o.detail) for o in outcomes), expected)
    result = ModeResult(outcomes, report, [], [], {"pause coordinator > lease": fault}, served)
    return json.loads(json.dumps(_summary_row(result), default=str))


def test_rows_carry_served_unknown_and_failed_by_the_fault_per_mode() -> None:
    saga = summary_row([("ok", ""), ("failed", f"branch order failed: {OUT_OF_STOCK}"),
                        ("failed", "refused: coordinator at capacity"), ("unknown", "UNAVAILABLE")],
                       {"t1": OUT_OF_STOCK})
    rows = matrix.rows_of(PAUSE, {"saga": saga})
    assert len(rows) == 1
    r = rows[0]
    assert (r.kind, r.mode, r.issued, r.served, r.refused) == ("pause", "saga", 4, 2, 1)
    assert (r.unknown, r.failed_by_fault, r.wrong, r.windows) == (1, 1, 0, 2)
    assert r.answer_p99_ms == pytest.approx(8000)  # the unknown one gave up after 8 s
    assert r.to_dict()["served_fraction"] == 0.5
    assert r.to_dict()["failed_by_fault_fraction"] == 0.25


def test_the_table_has_a_line_per_kind_and_mode_with_shares() -> None:
    all_ok = summary_row([("ok", "")] * 4, {})
    half = summary_row([("ok", ""), ("ok", ""), ("unknown", "DEADLINE_EXCEEDED"),
                        ("failed", "saga deadline exceeded")], {})
    rows = matrix.rows_of(PAUSE, {"saga": all_ok, "2pc": half})
    lines = matrix.table(rows)
    assert lines[0] == matrix.HEADER
    assert len(lines) == 4
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[:7] == ["a coordinator paused", "2pc", "4", "50.0 %", "25.0 %", "25.0 %", "8.00 s"]
    assert cells[7:] == ["0", "clean"]
    assert [c.strip() for c in lines[2].strip("|").split("|")][3] == "100.0 %"


def test_the_table_names_what_the_checker_found() -> None:
    broken = summary_row([("ok", ""), ("ok", "")], {}, violations=True)
    row = matrix.rows_of(PAUSE, {"saga": broken})[0]
    assert row.violations > 0 and row.lost == 1
    line = matrix.table([row])[2]
    assert f"| {row.violations} | lost 1 |" in line


def test_a_run_without_serving_figures_gives_no_rows() -> None:
    assert matrix.rows_of(PAUSE, {"saga": {"issued": 3, "ok": 3}}) == []


def test_the_matrix_writes_markdown_and_json(tmp_path: Path) -> None:
    m = matrix.Matrix(config={"duration_s": 40, "rate": 20})
    m.rows += matrix.rows_of(PAUSE, {"saga": summary_row([("ok", "")], {})})
    m.runs["pause"] = {"status": "ok", "schedule": "pause:c1|c2@every 20s", "load": [1.0, 2.5]}
    m.write(tmp_path)
    text = (tmp_path / "matrix.md").read_text()
    assert "`pause:c1\\|c2@every 20s`" in text  # a bar inside a cell would split it
    assert "1.0 → 2.5" in text and "`duration_s=40`" in text
    saved = json.loads((tmp_path / "matrix.json").read_text())
    assert saved["rows"][0]["served"] == 1 and saved["runs"]["pause"]["status"] == "ok"


def test_choose_kinds_by_key_in_the_matrix_order() -> None:
    assert matrix.choose("") == matrix.KINDS == matrix.choose("all")
    chosen = matrix.choose("kill-participant, no-fault")
    assert [k.key for k in chosen] == ["no-fault", "kill-participant"]
    with pytest.raises(ValueError, match="unknown fault kind"):
        matrix.choose("no-fault,meteor")


def test_every_kind_is_one_fault_alone_and_a_short_run_sees_it() -> None:
    matrix.check(matrix.KINDS)
    for kind in matrix.KINDS:
        events = timeline(kind.schedule, links=LINKS, processes=PROCESSES, duration_s=8, seed=1)
        if kind.key == "no-fault":
            assert events == []
            continue
        assert events and events[0].at_s < 8, kind.key
        assert len({e.kind for e in events}) == 1, kind.key  # one kind of fault, alone


def test_the_pause_outlasts_the_lease() -> None:
    pause = next(k for k in matrix.kinds(lease_s=3) if k.key == "pause-coordinator")
    events = timeline(pause.schedule, links=LINKS, processes=PROCESSES, duration_s=40, seed=1)
    assert events and all(e.kind == "pause" and e.duration_s > 3 for e in events)
