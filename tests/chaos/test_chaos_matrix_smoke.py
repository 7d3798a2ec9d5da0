"""``txc chaos matrix`` end to end, short: two kinds (no fault, a participant killed), saga
only, a few seconds each. Real processes, etcd, PostgreSQL and MariaDB, as the chaos smoke."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.cli import main

pytestmark = pytest.mark.integration


def test_matrix_runs_each_kind_alone_and_tabulates_it(tmp_path: Path) -> None:
    code = main(["chaos", "matrix", "--kinds", "kill-participant,no-fault", "--modes", "saga",
                 "--duration", "6", "--rate", "5", "--converge", "40", "--packet", "off",
                 "--out", str(tmp_path)])

    assert code == 0
    saved = json.loads((tmp_path / "matrix.json").read_text())
    assert list(saved["runs"]) == ["no-fault", "kill-participant"]  # the matrix' order
    assert all(run["status"] == "ok" for run in saved["runs"].values())
    rows = {row["kind"]: row for row in saved["rows"]}
    assert set(rows) == {"no-fault", "kill-participant"}
    for row in rows.values():
        assert row["mode"] == "saga" and row["issued"] == 30
        assert row["violations"] == row["lost"] == row["phantom"] == row["not_terminal"] == 0
        assert row["served"] + row["unknown"] + row["failed_by_fault"] + row["wrong"] == 30
        assert row["answer_p99_ms"] is not None
    assert rows["no-fault"]["windows"] == 0 and rows["kill-participant"]["windows"] == 1
    assert rows["no-fault"]["served_fraction"] >= 0.9  # 5 transfers/s, 8 s to answer, no fault
    # each kind is a run of its own, with its own report
    for key in rows:
        summary = json.loads((tmp_path / key / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["modes"]["saga"]["served"] == rows[key]["served"]
    killed = json.loads((tmp_path / "kill-participant" / "summary.json").read_text())
    assert list(killed["modes"]["saga"]["by_fault"]) == ["kill service"]
    table = (tmp_path / "matrix.md").read_text()
    assert "| no fault (reference) | saga | 30 |" in table
    assert "| a participant service killed 5 s, every 20 s | saga | 30 |" in table
