"""The run's pictures, shared by report.md's PNGs and the console's run pages.

Built on ``matplotlib.figure.Figure`` rather than pyplot: no global state, so the console
can draw from several threads. Every function takes :class:`rundir.RunData` and returns
PNG bytes; none needs a display.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from .rundir import Call, FaultWindow, ModeSeries, RunData

OUTCOME_COLOURS = {"ok": "#2e7d32", "failed": "#ef6c00", "unknown": "#c62828"}
FAULT_COLOUR = "#5c6bc0"
MODE_COLOURS = {"none": "#8d6e63", "saga": "#1e88e5", "2pc": "#8e24aa"}
FLOOR_MS = 0.1  # consistent by the time the client had its answer: drawn here on a log axis
NAMES = ("timeline", "reads", "consistency", "outcomes")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # imported late: matplotlib is an extra

    fig = Figure(figsize=(width, height), layout="constrained")
    fig.set_facecolor("white")
    return fig


def _png(fig: Any, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _colour(mode: str) -> str:
    return MODE_COLOURS.get(mode, "#546e7a")


def _modes(run: RunData) -> list[tuple[str, ModeSeries]]:
    return [(m, s) for m, s in run.modes.items() if s.calls or s.reads]


def _empty(fig: Any, text: str) -> bytes:
    fig.text(0.5, 0.5, text, ha="center", va="center", color="#555", fontsize=12)
    return _png(fig)


# -- throughput and latency, with labelled fault windows ----------------------------------


def timeline(run: RunData) -> bytes:
    """Per mode a column: the fault windows as labelled bars, completed transfers per
    second by outcome, and each transfer's latency (log axis), all on one time axis."""
    modes = _modes(run)
    if not modes:
        return _empty(_figure(8, 2), "no transfers recorded")
    rows = max(len({f.label for f in s.faults}) for _, s in modes)
    fig = _figure(6.5 * len(modes), 6.5 + 0.22 * rows)
    grid = fig.add_gridspec(3, len(modes), height_ratios=[0.6 + 0.22 * rows, 2.2, 2.6])
    for col, (mode, s) in enumerate(modes):
        faults = fig.add_subplot(grid[0, col])
        through = fig.add_subplot(grid[1, col], sharex=faults)
        latency = fig.add_subplot(grid[2, col], sharex=faults)
        _fault_lanes(faults, s, mode)
        _throughput(through, s)
        _latency(latency, s)
    return _png(fig)


def _fault_lanes(ax: Any, s: ModeSeries, mode: str) -> None:
    labels = sorted({f.label for f in s.faults})
    end = max((c.ended_at for c in s.calls), default=s.t0) - s.t0
    for row, label in enumerate(labels):
        spans = [(f.applied_at - s.t0, _until(f, s.t0, end)) for f in s.faults if f.label == label]
        ax.broken_barh(spans, (row - 0.35, 0.7), color=FAULT_COLOUR)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(-0.6, max(len(labels), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_title(f"{mode}: faults (fault, target)" if labels else f"{mode}: no faults applied",
                 loc="left", fontsize=10)
    ax.tick_params(labelbottom=False)
    ax.grid(axis="x", alpha=0.3)


def _until(f: FaultWindow, t0: float, end: float) -> float:
    """The window's length; one still in force when the run stopped lasts to its end."""
    if f.reverted_at is not None:
        return f.reverted_at - f.applied_at
    return max(0.0, end - (f.applied_at - t0))


def _shade(ax: Any, s: ModeSeries) -> None:
    for f in s.faults:
        if f.reverted_at is not None:
            ax.axvspan(f.applied_at - s.t0, f.reverted_at - s.t0, color=FAULT_COLOUR, alpha=0.07, lw=0)


def _throughput(ax: Any, s: ModeSeries) -> None:
    seconds = int(max((c.ended_at for c in s.calls), default=s.t0) - s.t0) + 1
    bottom = [0] * seconds
    for told, colour in OUTCOME_COLOURS.items():
        per = Counter(int(c.ended_at - s.t0) for c in s.calls if c.told == told)
        heights = [per.get(i, 0) for i in range(seconds)]
        ax.bar(range(seconds), heights, width=1.0, bottom=bottom, align="edge", color=colour,
               label=told)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    _shade(ax, s)
    ax.set_ylabel("transfers/s")
    ax.set_ylim(0, max([*bottom, 1]) * 1.3)  # room for the legend above the bars
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    ax.tick_params(labelbottom=False)
    ax.grid(axis="y", alpha=0.3)


def _latency(ax: Any, s: ModeSeries) -> None:
    for told, colour in OUTCOME_COLOURS.items():
        mine = [c for c in s.calls if c.told == told]
        ax.scatter([c.started_at - s.t0 for c in mine], [_ms(c) for c in mine], s=6,
                   color=colour, label=told, alpha=0.8, lw=0)
    _shade(ax, s)
    ax.set_yscale("log")
    _plain_numbers(ax.yaxis)
    ax.set_ylabel("latency (ms, log)")
    ax.set_xlabel("seconds since the mode's first transfer")
    ax.grid(alpha=0.3, which="both")


def _plain_numbers(axis: Any) -> None:
    """5, 10, 200 on a log axis rather than 5x10^0."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _ms(c: Call) -> float:
    return max(0.1, (c.ended_at - c.started_at) * 1000)


# -- inconsistent reads over time ----------------------------------------------------------


def reads(run: RunData) -> bytes:
    """Money out of place in each read during the run; inconsistent reads in red."""
    modes = [(m, s) for m, s in run.modes.items() if s.reads]
    if not modes:
        return _empty(_figure(8, 2), "no reads recorded during this run "
                      "(runs before the console did not keep them)")
    fig = _figure(6.5 * len(modes), 3.2)
    for col, (mode, s) in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), col + 1)
        xs = [r.at - s.t0 for r in s.reads]
        ax.step(xs, [r.delta for r in s.reads], where="post", color=_colour(mode), lw=1)
        bad = [r for r in s.reads if not r.consistent]
        ax.scatter([r.at - s.t0 for r in bad], [r.delta for r in bad], s=10, color="#c62828",
                   label="inconsistent read", zorder=3)
        _shade(ax, s)
        share = len(bad) / len(s.reads)
        ax.set_title(f"{mode}: {share:.0%} of {len(s.reads)} reads inconsistent", loc="left",
                     fontsize=10)
        ax.set_ylabel("money seen - money issued")
        ax.set_xlabel("seconds since the mode's first transfer")
        ax.axhline(0, color="#999", lw=0.8)
        ax.grid(alpha=0.3)
        if bad:
            ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


# -- time to consistency ---------------------------------------------------------------------


def consistency(run: RunData) -> bytes:
    """Time to consistency as a CDF on a log axis: what share of transfers had settled
    everywhere within x ms of the client's answer."""
    modes = [(m, s) for m, s in run.modes.items() if s.ttc_s]
    if not modes:
        return _empty(_figure(8, 2), "no time to consistency recorded "
                      "(mode none has no coordinator to ask)")
    fig = _figure(7.5, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for mode, s in modes:
        values = sorted(max(FLOOR_MS, v * 1000) for v in s.ttc_s)
        at_once = sum(1 for v in s.ttc_s if v * 1000 <= FLOOR_MS)
        ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post",
                color=_colour(mode), lw=1.8,
                label=f"{mode}: {at_once} of {len(values)} consistent when answered")
    ax.set_xscale("log")
    _plain_numbers(ax.xaxis)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time to consistency after the client's answer (ms, log)")
    ax.set_ylabel("share of transfers")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    return _png(fig)


# -- outcomes per mode -----------------------------------------------------------------------

BARS = (("ok", "ok", "#2e7d32"), ("failed", "failed", "#ef6c00"),
        ("unknown", "unknown", "#c62828"), ("violations", "violations", "#000000"))


def outcomes(run: RunData) -> bytes:
    """ok / failed / unknown / violations per mode, side by side, each bar labelled."""
    rows = run.rows()
    if not rows:
        return _empty(_figure(8, 2), "no modes finished")
    fig = _figure(max(5.0, 2.2 * len(rows) + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(BARS)
    for i, (key, label, colour) in enumerate(BARS):
        xs = [m + (i - (len(BARS) - 1) / 2) * width for m in range(len(rows))]
        heights = [_count(row.get(key)) for row in rows.values()]
        bars = ax.bar(xs, heights, width=width, color=colour, label=label)
        ax.bar_label(bars, fontsize=8, padding=1)
    ax.set_xticks(range(len(rows)), list(rows))
    ax.set_ylabel("transfers")
    ax.legend(ncols=len(BARS), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _count(value: object) -> int:
    return len(value) if isinstance(value, list) else int(value) if isinstance(value, int | float) else 0


DRAW: Mapping[str, Callable[[RunData], bytes]] = {
    "timeline": timeline, "reads": reads, "consistency": consistency, "outcomes": outcomes}


def available() -> str | None:
    """Why plots cannot be drawn here, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install 'txcoord[chaos]')"
    return None
