"""The fault matrix: each kind of fault alone, per mode, and how well the transfers were
served through it.

Each kind is one nemesis schedule (:mod:`txcoord_chaos.nemesis`), run as a chaos run of its
own (:class:`txcoord_chaos.runner.Runner`: its own databases, etcd, coordinators and
services, in a folder ``OUT/<kind>/`` with its full report). Per kind and mode the matrix
keeps: served, unknown and failed-by-the-fault shares (see :mod:`txcoord_chaos.serving`),
the p99 time to answer, and the checker's verdict. ``OUT/matrix.md`` and
``OUT/matrix.json`` are rewritten after every kind, so an interrupted matrix keeps what it
measured. The table building is pure: summary rows in, rows and text out.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .nemesis import parse
from .runner import RunConfig, RunFailed, Runner
from .topology import LEASE_TTL_S, LINKS, PROCESSES


@dataclass(frozen=True)
class Kind:
    """One row group of the matrix: a fault kind and the schedule that applies it alone."""

    key: str  # its folder under --out, and its name on the command line
    title: str
    schedule: str  # nemesis language; "" = no fault


def kinds(lease_s: float = LEASE_TTL_S) -> tuple[Kind, ...]:
    """The kinds of issue 21, each alone. Every window opens 3 s in, so that short runs
    (tests) see one too. Pauses last twice the coordinators' lease."""
    pause = 2 * lease_s
    return (
        Kind("no-fault", "no fault (reference)", ""),
        Kind("pause-coordinator", f"a coordinator paused {pause:g} s (past its {lease_s:g} s "
             "lease), every 20 s", f"pause:c1|c2@every 20s for {pause:g}s from 3s"),
        Kind("coordinator-cut-from-etcd", "a coordinator cut from every etcd member 8 s, every 20 s",
             "partition:all(c1->etcd*)|all(c2->etcd*)@every 20s for 8s from 3s"),
        Kind("kill-etcd-member", "an etcd member killed 4 s, every 10 s",
             "kill:etcd1|etcd2|etcd3@every 10s for 4s from 3s"),
        Kind("kill-participant", "a participant service killed 5 s, every 20 s",
             "kill:accounts|orders@every 20s for 5s from 3s"),
        Kind("partition-coordinator-participant",
             "coordinators partitioned from a participant 5 s, every 20 s",
             "partition:c->accounts|c->orders@every 20s for 5s from 3s"),
        Kind("latency-coordinator-etcd",
             "latency 200 ± 50 ms each way on every coordinator-etcd link 10 s, every 20 s",
             "latency(200,50):all(c1->etcd*|c2->etcd*)@every 20s for 10s from 3s"),
        Kind("partition-client-coordinator", "the client partitioned from a coordinator 8 s, every 20 s",
             "partition:client->c1|client->c2@every 20s for 8s from 3s"),
    )


KINDS = kinds()


def choose(keys: str, known: Sequence[Kind] = KINDS) -> tuple[Kind, ...]:
    """Kinds by comma-separated key, in the matrix' order; ``all`` or "" = every kind."""
    wanted = [k.strip() for k in keys.split(",") if k.strip() and k.strip() != "all"]
    unknown = sorted(set(wanted) - {k.key for k in known})
    if unknown:
        raise ValueError(f"unknown fault kind(s) {', '.join(unknown)} "
                         f"(known: {', '.join(k.key for k in known)})")
    return tuple(k for k in known if not wanted or k.key in wanted)


# -- the table (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One kind, one mode."""

    kind: str
    title: str
    mode: str
    issued: int
    served: int
    unknown: int
    failed_by_fault: int
    refused: int
    wrong: int
    answer_p99_ms: float | None
    violations: int
    lost: int
    phantom: int
    not_terminal: int
    in_doubt: int
    windows: int  # fault windows applied (events fired together count once)

    def share(self, count: int) -> float | None:
        return count / self.issued if self.issued else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "served_fraction": self.share(self.served),
                "unknown_fraction": self.share(self.unknown),
                "failed_by_fault_fraction": self.share(self.failed_by_fault)}


def rows_of(kind: Kind, modes: Mapping[str, Mapping[str, Any]]) -> list[Row]:
    """The rows of one kind from its run's summary.json ``modes`` (a mode without the
    serving figures, from a run before they existed, is left out)."""
    return [_row(kind, mode, r) for mode, r in modes.items() if "served" in r]


def _row(kind: Kind, mode: str, r: Mapping[str, Any]) -> Row:
    windows = sum(int(f.get("windows", 0)) for f in (r.get("by_fault") or {}).values())
    return Row(kind=kind.key, title=kind.title, mode=mode, issued=int(r["issued"]),
               served=int(r["served"]), unknown=int(r["unknown"]),
               failed_by_fault=int(r["failed_by_fault"]), refused=int(r["refused"]),
               wrong=int(r.get("wrong", 0)), answer_p99_ms=r.get("latency_p99_ms"),
               violations=int(r["violations"]), lost=int(r["lost"]), phantom=int(r["phantom"]),
               not_terminal=int(r["not_terminal"]), in_doubt=int(r.get("in_doubt") or 0),
               windows=windows)


HEADER = ("| fault, alone | mode | transfers | served | unknown | failed by the fault | "
          "p99 to answer | violations | other checks |")


def table(rows: Sequence[Row]) -> list[str]:
    """Markdown lines: one row per kind and mode, in the order given."""
    lines = [HEADER, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.title, r.mode, f"{r.issued:,}", _share(r, r.served), _share(r, r.unknown),
                 _share(r, r.failed_by_fault), _seconds(r.answer_p99_ms), str(r.violations),
                 _checks(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _share(r: Row, count: int) -> str:
    share = r.share(count)
    return "-" if share is None else f"{share:.1%}".replace("%", " %")


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"


def _checks(r: Row) -> str:
    """The checker's other verdicts and wrong answers, when any is not zero."""
    found = {"lost": r.lost, "phantom": r.phantom, "unfinished": r.not_terminal,
             "in doubt": r.in_doubt, "wrong answers": r.wrong}
    bad = [f"{name} {n}" for name, n in found.items() if n]
    return ", ".join(bad) if bad else "clean"


@dataclass
class Matrix:
    """What the matrix ran with and what it measured so far."""

    config: Mapping[str, Any]
    rows: list[Row] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> status, load, folder

    def to_dict(self) -> dict[str, Any]:
        return {"config": dict(self.config), "runs": self.runs,
                "rows": [r.to_dict() for r in self.rows]}

    def markdown(self) -> str:
        cfg = self.config
        lines = ["# txcoord fault matrix", "",
                 "Each fault kind alone, one chaos run per kind ("
                 + ", ".join(f"`{k}={v}`" for k, v in cfg.items()) + ").", "",
                 "Served: answered within the client's timeout with the answer the business "
                 "would have given with no faults (ok, or its own refusal). Unknown: no answer "
                 "in time. Failed by the fault: told failed for a reason other than the "
                 "business' (capacity, a deadline, a participant out of reach). p99 to answer: "
                 "of every transfer, until the client had its answer or gave up.", ""]
        lines += table(self.rows)
        lines += ["", "| fault kind | status | schedule | load average (start, end) | report |",
                  "|---|---|---|---|---|"]
        for key, run in self.runs.items():
            load = " → ".join(f"{x:.1f}" for x in run.get("load", ()))
            schedule = (run["schedule"] or "-").replace("|", "\\|")  # not a column
            lines.append(f"| {key} | {run['status']} | `{schedule}` | {load} | "
                         f"[{key}/report.md]({key}/report.md) |")
        return "\n".join(lines) + "\n"

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "matrix.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        (out / "matrix.md").write_text(self.markdown())


# -- running -----------------------------------------------------------------------------


def check(chosen: Sequence[Kind]) -> None:
    """Every schedule parses against the harness' names, before anything starts."""
    for kind in chosen:
        parse(kind.schedule, links=LINKS, processes=PROCESSES)


def machine() -> dict[str, Any]:
    return {"machine": f"{os.cpu_count()}-core {platform.machine()}", "python": platform.python_version()}


async def run(base: RunConfig, chosen: Sequence[Kind],
              progress: Callable[[str], None] = print) -> Matrix:
    """One chaos run per kind, into ``base.out/<kind>``; the table after each. A kind whose
    run ends early is recorded as failed (with its error) and the next one runs."""
    check(chosen)
    matrix = Matrix(config={"modes": ",".join(base.modes), "duration_s": base.duration_s,
                            "rate": base.rate, "timeout_s": base.timeout_s, "seed": base.seed,
                            "coordinators": 2, "lease_s": LEASE_TTL_S, **machine()})
    for kind in chosen:
        progress(f"== {kind.key}: {kind.title}")
        config = replace(base, out=base.out / kind.key, faults=kind.schedule)
        load = [os.getloadavg()[0]]
        status = await _one(Runner(config, progress=progress))
        load.append(os.getloadavg()[0])
        matrix.runs[kind.key] = {"status": status, "schedule": kind.schedule, "load": load,
                                 "folder": kind.key, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        matrix.rows += rows_of(kind, _modes(config.out))
        matrix.write(base.out)
    return matrix


async def _one(runner: Runner) -> str:
    """ok, dirty (an invariant broken or a transaction left unfinished in saga or 2PC), or
    failed: <why>."""
    try:
        results = await runner.run()
    except RunFailed as exc:
        return f"failed: {exc}"
    dirty = [m for m, r in results.items() if m != "none" and not r.report.clean]
    return "dirty" if dirty else "ok"


def _modes(folder: Path) -> Mapping[str, Mapping[str, Any]]:
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    modes = summary.get("modes") if isinstance(summary, dict) else None
    return modes if isinstance(modes, dict) else {}
