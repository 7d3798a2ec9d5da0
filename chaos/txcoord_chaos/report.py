"""The run's folder: raw events (JSON lines), summary.json, report.md and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import faultstats
from .client import Outcome

COLUMNS = [
    ("issued", "issued"), ("ok", "ok"), ("failed", "failed"), ("unknown", "unknown"),
    ("violations", "violations"), ("lost", "lost"), ("phantom", "phantom"),
    ("not_terminal", "not terminal"), ("throughput", "transfers/s"),
    ("latency_p50_ms", "p50 ms"), ("latency_p99_ms", "p99 ms"),
    ("ttc_p99_ms", "consistent p99 ms"), ("temporary_violation_fraction", "reads inconsistent"),
]


def write_events(out: Path, outcomes: Sequence[Outcome], faults: Sequence[Mapping[str, Any]]) -> None:
    with (out / "events.jsonl").open("a") as f:
        for o in outcomes:
            f.write(json.dumps({"type": "transfer", "mode": o.mode, "id": o.transfer.transfer_id,
                                "account": o.transfer.account, "amount": o.transfer.amount,
                                "told": o.told, "detail": o.detail, "started_at": o.started_at,
                                "ended_at": o.ended_at}) + "\n")
        for fault in faults:
            f.write(json.dumps({"type": "fault", **fault}) + "\n")


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
        cells = [_cell(row.get(key)) for key, _ in COLUMNS]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Violations after convergence (first few per mode):", ""]
    for mode, row in summary.items():
        found = row.get("violation_list") or []
        lines.append(f"- **{mode}**: " + ("none" if not found else "; ".join(
            f"{v.get('kind')} {v.get('transfer_id') or ''} {v.get('detail', '')}".strip()
            for v in found[:5])))
    lines += _by_fault(summary)
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    lines += ["", "![throughput and latency](timeline.png)", "",
              "![time to consistency](consistency.png)", ""]
    return "\n".join(lines)


def _by_fault(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per mode: each kind of fault, its windows and the transfers in flight during them."""
    lines = ["", "## By fault", "",
             "Transfers whose call overlapped a window of that kind (a transfer counts under "
             "every kind it overlapped):"]
    for mode, row in summary.items():
        rows = row.get("by_fault") or {}
        lines += ["", f"**{mode}**", ""] + (faultstats.table(rows) if rows else ["no faults applied"])
    return lines


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.0f}"
    if isinstance(value, list):
        return str(len(value))
    return "-" if value is None else str(value)


def plots(out: Path, outcomes: Mapping[str, Sequence[Outcome]],
          windows: Mapping[str, Sequence[tuple[float, float]]],
          ttc: Mapping[str, Sequence[float]]) -> list[str]:
    """Writes timeline.png and consistency.png; returns what it could not draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["plots: matplotlib is not installed (pip install 'txcoord[chaos]')"]
    fig, axes = plt.subplots(2, max(1, len(outcomes)), figsize=(5 * max(1, len(outcomes)), 6),
                             squeeze=False)
    for col, (mode, rows) in enumerate(outcomes.items()):
        _timeline(axes[0][col], axes[1][col], mode, rows, windows.get(mode, ()))
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, values in ttc.items():
        if values:
            ax.hist([v * 1000 for v in values], bins=40, alpha=0.6, label=mode)
    ax.set_xlabel("time to consistency (ms)")
    ax.set_ylabel("transfers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "consistency.png", dpi=90)
    plt.close(fig)
    return []


def _timeline(top: Any, bottom: Any, mode: str, rows: Sequence[Outcome],
              windows: Sequence[tuple[float, float]]) -> None:
    if not rows:
        return
    t0 = min(o.started_at for o in rows)
    ends = sorted(o.ended_at - t0 for o in rows)
    buckets: dict[int, int] = {}
    for end in ends:
        buckets[int(end)] = buckets.get(int(end), 0) + 1
    top.plot(sorted(buckets), [buckets[k] for k in sorted(buckets)], label="completed/s")
    top.set_title(f"{mode}: throughput")
    bottom.scatter([o.started_at - t0 for o in rows],
                   [(o.ended_at - o.started_at) * 1000 for o in rows], s=3,
                   c=["tab:green" if o.told == "ok" else "tab:orange" if o.told == "failed"
                      else "tab:red" for o in rows])
    bottom.set_title(f"{mode}: latency (ms); red = unknown")
    bottom.set_xlabel("seconds")
    for ax in (top, bottom):
        for start, end in windows:
            ax.axvspan(start, end, color="grey", alpha=0.2)
