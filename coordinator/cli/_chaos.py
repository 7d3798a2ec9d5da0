"""``txc chaos run``: the transfer workload under faults, per mode, with a report.
``txc chaos matrix``: each kind of fault alone, per mode, in one table."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chaos = sub.add_parser("chaos", help="fault-injection runs of the transfer workload")
    cmds = chaos.add_subparsers(dest="chaos_command", required=True)
    run = cmds.add_parser("run", help="run none / saga / 2pc under the same faults and compare")
    run.add_argument("--duration", type=float, default=60.0, help="seconds of load per mode")
    run.add_argument("--faults", default=None,
                     help="nemesis schedule, or @FILE (default: a mix of partitions, resets, "
                          "latency, bandwidth, kills and pauses on every link and process)")
    run.add_argument("--out", type=Path, default=Path("chaos-out"))
    _shared(run)
    run.set_defaults(func=_run)
    matrix = cmds.add_parser("matrix", help="each fault kind alone, per mode: served, unknown, "
                                            "failed by the fault, p99 to answer, violations")
    matrix.add_argument("--kinds", default="all",
                        help="comma-separated fault kinds (default all): " + _kind_keys())
    matrix.add_argument("--duration", type=float, default=40.0,
                        help="seconds of load per kind and mode")
    matrix.add_argument("--timeout", type=float, default=8.0,
                        help="the client's timeout per transfer, seconds")
    matrix.add_argument("--out", type=Path, default=Path("chaos-matrix"),
                        help="matrix.md, matrix.json, and one run's folder per kind")
    _shared(matrix)
    matrix.set_defaults(func=_matrix)


def _shared(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--modes", default="none,saga,2pc", help="comma-separated: none,saga,2pc")
    cmd.add_argument("--rate", type=float, default=20.0, help="transfers per second")
    cmd.add_argument("--seed", type=int, default=1)
    cmd.add_argument("--packet", choices=("auto", "on", "off"), default="auto",
                     help="packet-level faults (network namespaces + iptables; root only): "
                          "auto = when this machine allows them (default)")
    cmd.add_argument("--converge", type=float, default=60.0,
                     help="seconds to wait for recovery after healing")
    cmd.add_argument("--keep-databases", action="store_true",
                     help="keep the run's own databases (txc_chaos_<run id>) for inspection; "
                          "by default the run drops them")
    cmd.add_argument("--pg", default="postgres@127.0.0.1:5432", metavar="USER@HOST:PORT",
                     help="the PostgreSQL server the run makes its database on")
    cmd.add_argument("--maria", default="root@127.0.0.1:3306", metavar="USER@HOST:PORT",
                     help="the MariaDB server the run makes its database on")


def _kind_keys() -> str:
    try:
        from txcoord_chaos.matrix import KINDS
    except ImportError:
        return "(the chaos harness is not installed)"
    return ", ".join(k.key for k in KINDS)


def _run(args: argparse.Namespace) -> int:
    """Every way this ends early says why on its last line and exits non-zero; the harness
    also writes the error to summary.json."""
    try:  # the harness is not needed to run a coordinator: import it on demand
        from txcoord_chaos.runner import RunFailed, Runner
    except ImportError as exc:
        return _fail(f"the chaos harness is not installed ({exc})", 2)
    try:
        config = _config(args)
    except (ValueError, OSError) as exc:
        _write_error(args.out, f"{type(exc).__name__}: {exc}")
        return _fail(str(exc), 2)
    try:
        results = asyncio.run(_until_signalled(Runner(config).run()))
    except RunFailed as exc:
        return _fail(f"{exc} (summary and logs in {args.out})", 1)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return _fail(f"interrupted (summary and logs in {args.out})", 130)
    print(f"report: {args.out / 'report.md'}")
    dirty = [m for m, r in results.items() if m != "none" and not r.report.clean]
    if dirty:
        return _fail(f"invariant violations or unfinished transactions in {dirty}", 1)
    return 0


def _matrix(args: argparse.Namespace) -> int:
    """Exits 0 when every kind ran and saga and 2PC kept every invariant and finished every
    transaction, 1 otherwise; the table holds what was measured either way."""
    try:
        from txcoord_chaos import matrix
    except ImportError as exc:
        return _fail(f"the chaos harness is not installed ({exc})", 2)
    try:
        chosen = matrix.choose(args.kinds)
        matrix.check(chosen)
        config = _config(args, faults="")
    except (ValueError, OSError) as exc:
        return _fail(str(exc), 2)
    try:
        result = asyncio.run(_until_signalled(matrix.run(config, chosen)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return _fail(f"interrupted (the table so far in {args.out / 'matrix.md'})", 130)
    print(f"matrix: {args.out / 'matrix.md'}")
    bad = {k: r["status"] for k, r in result.runs.items() if r["status"] != "ok"}
    if bad:
        return _fail("; ".join(f"{k}: {s}" for k, s in bad.items()), 1)
    return 0


async def _until_signalled(run: Coroutine[Any, Any, T]) -> T:
    """SIGTERM cancels the run like Ctrl-C does (asyncio.run cancels on SIGINT itself), so
    the harness stops what it started and says why. A handler that raised
    KeyboardInterrupt instead could land inside a library that swallows it."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run


def _config(args: argparse.Namespace, faults: str | None = None) -> Any:
    from txcoord_chaos.databases import Databases
    from txcoord_chaos.nemesis import DEFAULT_SCHEDULE
    from txcoord_chaos.runner import RunConfig

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in ("none", "saga", "2pc")]
    if bad or not modes:
        raise ValueError(f"--modes takes none, saga, 2pc (got {args.modes!r})")
    if faults is None:
        faults = args.faults or DEFAULT_SCHEDULE
    if faults.startswith("@"):
        faults = Path(faults[1:]).read_text()
    pg_user, pg_host, pg_port = _server(args.pg, "--pg")
    maria_user, maria_host, maria_port = _server(args.maria, "--maria")
    dbs = Databases(pg_host=pg_host, pg_port=pg_port, pg_user=pg_user, maria_host=maria_host,
                    maria_port=maria_port, maria_user=maria_user)
    return RunConfig(out=args.out, modes=modes, duration_s=args.duration, rate=args.rate,
                     seed=args.seed, faults=faults, converge_s=args.converge,
                     packet={"auto": None, "on": True, "off": False}[args.packet], dbs=dbs,
                     keep_databases=args.keep_databases,
                     **({"timeout_s": args.timeout} if "timeout" in args else {}))


def _server(text: str, flag: str) -> tuple[str, str, int]:
    user, at, address = text.rpartition("@")
    host, colon, port = address.rpartition(":")
    if not (at and user and colon and host and port.isdigit()):
        raise ValueError(f"{flag} takes USER@HOST:PORT (got {text!r})")
    return user, host, int(port)


def _write_error(out: Path, error: str) -> None:
    """summary.json for a run that could not even be configured."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(
            {"status": "failed", "error": error, "stage": "reading the options", "run": {},
             "modes": {}}, indent=2) + "\n")
    except OSError:
        pass  # the message on stderr still says why


def _fail(message: str, code: int) -> int:
    # Driver connections an interrupted run abandoned complain when they are collected
    # ("Event loop is closed"): collect them now, so that the reason stays the last line.
    gc.collect()
    print(f"txc chaos: {message}", file=sys.stderr)
    return code
