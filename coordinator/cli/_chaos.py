"""``txc chaos run``: the transfer workload under faults, per mode, with a report."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chaos = sub.add_parser("chaos", help="fault-injection runs of the transfer workload")
    cmds = chaos.add_subparsers(dest="chaos_command", required=True)
    run = cmds.add_parser("run", help="run none / saga / 2pc under the same faults and compare")
    run.add_argument("--modes", default="none,saga,2pc", help="comma-separated: none,saga,2pc")
    run.add_argument("--duration", type=float, default=60.0, help="seconds of load per mode")
    run.add_argument("--rate", type=float, default=20.0, help="transfers per second")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--faults", default=None,
                     help="nemesis schedule, or @FILE (default: a mix of partitions, resets, "
                          "latency, bandwidth, kills and pauses on every link and process)")
    run.add_argument("--packet", choices=("auto", "on", "off"), default="auto",
                     help="packet-level faults (network namespaces + iptables; root only): "
                          "auto = when this machine allows them (default)")
    run.add_argument("--out", type=Path, default=Path("chaos-out"))
    run.add_argument("--converge", type=float, default=60.0,
                     help="seconds to wait for recovery after healing")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:  # the harness is not needed to run a coordinator: import it on demand
        from txcoord_chaos.nemesis import DEFAULT_SCHEDULE
        from txcoord_chaos.runner import RunConfig, Runner
    except ImportError as exc:
        print(f"txc chaos: the chaos harness is not installed ({exc})", file=sys.stderr)
        return 2
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in ("none", "saga", "2pc")]
    if bad or not modes:
        print(f"txc chaos: --modes takes none, saga, 2pc (got {args.modes!r})", file=sys.stderr)
        return 2
    faults = args.faults or DEFAULT_SCHEDULE
    if faults.startswith("@"):
        faults = Path(faults[1:]).read_text()
    config = RunConfig(out=args.out, modes=modes, duration_s=args.duration, rate=args.rate,
                       seed=args.seed, faults=faults, converge_s=args.converge,
                       packet={"auto": None, "on": True, "off": False}[args.packet])
    # SIGTERM unwinds like Ctrl-C, so the harness stops the processes it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results = asyncio.run(Runner(config).run())
    print(f"report: {args.out / 'report.md'}")
    dirty = [m for m, r in results.items() if m != "none" and not r.report.clean]
    if dirty:
        print(f"txc chaos: invariant violations or unfinished transactions in {dirty}",
              file=sys.stderr)
        return 1
    return 0
