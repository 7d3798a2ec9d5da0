"""The run's folder: raw events (JSON lines), summary.json, report.md and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import faultstats, rundir
from . import plots as chart
from .checker import Observation
from .client import Outcome

PICTURES = {
    "outcomes": "ok, failed, unknown and violations per mode",
    "timeline": "fault windows, throughput and latency over time",
    "reads": "inconsistent reads over time",
    "consistency": "time to consistency (CDF, log axis)",
}

COLUMNS = [
    ("issued", "issued"), ("ok", "ok"), ("failed", "failed"), ("unknown", "unknown"),
    ("served_fraction", "served"),
    ("violations", "violations"), ("lost", "lost"), ("phantom", "phantom"),
    ("not_terminal", "not terminal"), ("throughput", "transfers/s"),
    ("latency_p50_ms", "p50 ms"), ("latency_p99_ms", "p99 ms"),
    ("ttc_p99_ms", "consistent p99 ms"), ("temporary_violation_fraction", "reads inconsistent"),
]


def write_events(out: Path, outcomes: Sequence[Outcome], faults: Sequence[Mapping[str, Any]], *,
                 mode: str = "", reads: Sequence[Observation] = (),
                 ttc: Mapping[str, float] | None = None) -> None:
    """Appends one mode's lines: its transfers, fault windows, reads of the databases during
    the run and each transfer's time to consistency (the plots are drawn from these)."""
    mode = mode or (outcomes[0].mode if outcomes else "")
    with (out / "events.jsonl").open("a") as f:
        for o in outcomes:
            f.write(json.dumps({"type": "transfer", "mode": o.mode, "id": o.transfer.transfer_id,
                                "account": o.transfer.account, "amount": o.transfer.amount,
                                "told": o.told, "detail": o.detail, "started_at": o.started_at,
                                "ended_at": o.ended_at}) + "\n")
        for fault in faults:
            f.write(json.dumps({"type": "fault", "mode": mode, **fault}) + "\n")
        for r in reads:
            f.write(json.dumps({"type": "read", "mode": mode, "at": r.at,
                                "consistent": r.consistent, "delta": r.delta}) + "\n")
        for transfer_id, seconds in (ttc or {}).items():
            f.write(json.dumps({"type": "consistency", "mode": mode, "id": transfer_id,
                                "ttc_s": seconds}) + "\n")


def write_summary(out: Path, summary: Mapping[str, Any]) -> None:
    """``{"status": "ok"|"dirty"|"failed", "error", "run": {...}, "modes": {mode: row}}``."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


def markdown(summary: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any],
             skipped: Sequence[str]) -> str:
    lines = ["# txcoord chaos run", "",
             "Config: " + ", ".join(f"`{k}={v}`" for k, v in config.items()), "",
             "| mode | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for mode, row in summary.items():
        cells = [_cell(row.get(key), key) for key, _ in COLUMNS]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Violations after convergence (first few per mode):", ""]
    for mode, row in summary.items():
        found = row.get("violation_list") or []
        lines.append(f"- **{mode}**: " + ("none" if not found else "; ".join(
            f"{v.get('kind')} {v.get('transfer_id') or ''} {v.get('detail', '')}".strip()
            for v in found[:5])))
    lines += _served(summary)
    lines += _by_fault(summary)
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    for name, title in PICTURES.items():
        lines += ["", f"![{title}]({name}.png)"]
    lines.append("")
    return "\n".join(lines)


SERVED_COLUMNS = [
    ("issued", "issued"), ("served", "served"), ("served_ok", "ok"), ("refused", "refused by the business"),
    ("failed_by_fault", "failed by the fault"), ("unknown", "unknown"), ("wrong", "wrong answer"),
]


def _served(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per mode: served (the business' own answer in time), and what the faults cost."""
    lines = ["", "## Served", "",
             "Served: answered within the client's timeout with the answer the business would "
             "have given with no faults (ok, or its own refusal: insufficient funds, out of "
             "stock). Failed by the fault: told failed for another reason (capacity, a "
             "deadline, a participant out of reach). Unknown: no answer in time.", "",
             "| mode | " + " | ".join(t for _, t in SERVED_COLUMNS) + " | not served, by cause |",
             "|---|" + "---|" * (len(SERVED_COLUMNS) + 1)]
    for mode, row in summary.items():
        if "served" not in row:
            continue
        cells = [_count_share(row, key) for key, _ in SERVED_COLUMNS]
        causes = ", ".join(f"{k} {n}" for k, n in (row.get("not_served_causes") or {}).items())
        lines.append(f"| {mode} | " + " | ".join(cells) + f" | {causes or '-'} |")
    return lines


def _count_share(row: Mapping[str, Any], key: str) -> str:
    count, issued = row.get(key), row.get("issued")
    if key == "issued" or not isinstance(count, int) or not issued:
        return _cell(count)
    return f"{count} ({count / issued:.1%})".replace("%", " %")


def _by_fault(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per mode: each kind of fault, its windows and the transfers in flight during them."""
    lines = ["", "## By fault", "",
             "Transfers whose call overlapped a window of that kind (a transfer counts under "
             "every kind it overlapped):"]
    for mode, row in summary.items():
        rows = row.get("by_fault") or {}
        lines += ["", f"**{mode}**", ""] + (faultstats.table(rows) if rows else ["no faults applied"])
    return lines


def _cell(value: Any, key: str = "") -> str:
    if isinstance(value, float) and key.endswith("_fraction"):
        return f"{value:.1%}".replace("%", " %")
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.0f}"
    if isinstance(value, list):
        return str(len(value))
    return "-" if value is None else str(value)


def plots(out: Path) -> list[str]:
    """Writes the PNGs of :data:`PICTURES` from the run's folder (summary.json and
    events.jsonl, as the console reads them); returns what it could not draw."""
    why = chart.available()
    if why:
        return [f"plots: {why}"]
    run = rundir.load(out)
    for name in PICTURES:
        (out / f"{name}.png").write_bytes(chart.DRAW[name](run))
    return []
