"""Chaos runs (``--runs DIR``): the list, one run's tables, and its plots as PNG.

Reading and drawing come from txcoord_chaos (rundir, plots), the code report.md's PNGs are
drawn with: a run looks the same in the browser and in its report.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ._state import Console

PLOTS = {
    "outcomes": "ok, failed, unknown and violations per mode",
    "timeline": "fault windows (fault, target), throughput and latency over time",
    "reads": "inconsistent reads over time",
    "consistency": "time to consistency after the client's answer (CDF, log axis)",
}


@dataclass(frozen=True)
class RunRow:
    name: str
    status: str
    error: str
    modes: list[tuple[str, dict[str, Any]]]


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "temporary_violation_fraction" and isinstance(value, int | float):
        return f"{value:.0%}"
    if isinstance(value, float):
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return str(len(value)) if isinstance(value, list) else str(value)


def _rundir() -> Any:
    from txcoord_chaos import rundir  # the chaos package: installed with txcoord

    return rundir


def _root(console: Console) -> Path | None:
    return console.settings.runs


def _find(console: Console, name: str) -> Path | None:
    """Only a folder the listing shows: a name is never joined onto a path."""
    root = _root(console)
    if root is None:
        return None
    return next((p for p in _rundir().runs_under(root) if p.name == name), None)


def _row(folder: Path) -> RunRow:
    try:
        run = _rundir().load(folder)
    except (OSError, ValueError) as exc:
        return RunRow(folder.name, "unreadable", str(exc), [])
    return RunRow(folder.name, run.status, str(run.summary.get("error") or ""),
                  [(m, dict(r)) for m, r in run.rows().items()])


async def runs_page(console: Console, request: Request) -> Response:
    root = _root(console)
    if root is None:
        return console.page(request, "error.html", 404, title="No chaos runs",
                            message="start the console with --runs DIR to list the runs under DIR")
    folders = await asyncio.to_thread(_rundir().runs_under, root)
    rows = [await asyncio.to_thread(_row, f) for f in folders]
    return console.page(request, "runs.html", root=str(root), runs=rows)


async def run_page(console: Console, request: Request) -> Response:
    name = request.path_params["name"]
    folder = _find(console, name)
    if folder is None:
        return console.page(request, "error.html", 404, title="Unknown run",
                            message=f"no run {name!r} under {_root(console)}")
    run = await asyncio.to_thread(_rundir().load, folder)
    rows = run.rows()
    by_fault = {m: r.get("by_fault") or {} for m, r in rows.items()}
    from txcoord_chaos import plots
    from txcoord_chaos.report import COLUMNS  # the report.md table's columns, the same here

    return console.page(request, "run.html", run=run, rows=rows, columns=COLUMNS, cell=cell,

                        by_fault=by_fault, plots=PLOTS, no_plots=plots.available(),
                        stamp=int((folder / "summary.json").stat().st_mtime))


async def plot(console: Console, request: Request) -> Response:
    name, kind = request.path_params["name"], request.path_params["plot"]
    folder = _find(console, name)
    if folder is None or kind not in PLOTS:
        return Response("no such plot", 404, media_type="text/plain")
    mtime = (folder / "summary.json").stat().st_mtime
    png = await asyncio.to_thread(_draw, str(folder), mtime, kind)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


@functools.lru_cache(maxsize=64)
def _draw(folder: str, mtime: float, kind: str) -> bytes:
    """Cached per run, its summary's modification time (a rerun draws anew) and plot."""
    from txcoord_chaos import plots

    return plots.DRAW[kind](_rundir().load(Path(folder)))
