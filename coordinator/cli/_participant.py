"""``txc participant check HOST:PORT --scenario FILE``: the conformance checker's front end.

Exit codes: 0 every case passed (or was skipped by the scenario); 1 a case failed; 2 bad
command line or scenario file, or a scenario the service does not bear out (its ``observe``
fails: checked before any case runs); 3 the participant is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time

from google.protobuf.json_format import MessageToDict

from .._conformance import CASES, ScenarioError, Unreachable, check, load_scenario
from ..client._coordinator import CoordinatorClient
from ._common import add_tls_client_flags, tls_client
from ._render import table, when
from ._tx import _client_flags, _sync

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    participant = sub.add_parser("participant", help="check a participant service")
    cmds = participant.add_subparsers(dest="participant_command", required=True)
    p = cmds.add_parser("check", help="drive a running participant through the protocol's hard "
                        "cases (it changes data: point it at a test instance)")
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--scenario", required=True, metavar="FILE",
                   help="JSON: the operations and payloads to use (docs/participants.md)")
    p.add_argument("--json", action="store_true", help="the report as JSON (for CI)")
    p.add_argument("--case", action="append", default=[], choices=[c.name for c in CASES],
                   help="run only this case (repeatable)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    add_tls_client_flags(p, "the participant")
    p.set_defaults(func=_check)
    _hold_commands(cmds)


def _hold_commands(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """hold / release / holds: through a coordinator (any one: holds are cluster-wide)."""
    hold = cmds.add_parser("hold", help="no coordinator calls HOST:PORT until released; its "
                           "transactions wait with their deadlines standing still")
    hold.add_argument("address", metavar="HOST:PORT")
    hold.add_argument("--reason", required=True)
    hold.add_argument("--refuse-starts", action="store_true",
                      help="refuse new starts naming it (UNAVAILABLE) instead of letting them wait")
    release = cmds.add_parser("release", help="end a hold: its transactions resume, at a "
                              "bounded rate")
    release.add_argument("address", metavar="HOST:PORT")
    release.add_argument("--reason", required=True)
    holds = cmds.add_parser("holds", help="the participants held now")
    holds.add_argument("--json", action="store_true")
    for p, run in ((hold, _hold), (release, _release), (holds, _holds)):
        _client_flags(p, defaults=True)
        p.set_defaults(func=_sync(run))


async def _hold(args: argparse.Namespace, client: CoordinatorClient) -> int:
    hold = await client.hold(args.address, args.reason, refuse_starts=args.refuse_starts)
    print(f"held {hold.address} since {when(hold.since)} by {hold.actor}: {hold.reason}"
          + ("  (new starts refused)" if hold.refuse_starts else ""))
    return 0


async def _release(args: argparse.Namespace, client: CoordinatorClient) -> int:
    hold = await client.release(args.address, args.reason)
    held_s = time.time() - hold.since.ToDatetime(dt.UTC).timestamp()
    print(f"released {hold.address} after {held_s:.0f} s (held by {hold.actor}: {hold.reason})")
    return 0


async def _holds(args: argparse.Namespace, client: CoordinatorClient) -> int:
    holds = await client.holds()
    if args.json:
        print(json.dumps([MessageToDict(h, preserving_proto_field_name=True) for h in holds],
                         indent=2))
        return 0
    rows = [[h.address, when(h.since), h.actor, "refused" if h.refuse_starts else "wait",
              str(h.waiting_here), h.reason] for h in holds]
    header = ("ADDRESS", "SINCE (UTC)", "BY", "STARTS", "WAITING HERE", "REASON")
    print(table(header, rows) if holds else "no participant is held")
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"txc participant check: --scenario {exc}")
        return EXIT_USAGE
    tls_ca, identity = tls_client("txc participant check", args)
    try:
        report = asyncio.run(check(args.address, scenario, tls_ca=tls_ca, tls_identity=identity,
                                   timeout_s=args.timeout, only=set(args.case) or None))
    except ScenarioError as exc:
        print(f"txc participant check: --scenario {args.scenario}: {exc} (no case was run)")
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"txc participant check: {exc} (no case was run)")
        return EXIT_UNREACHABLE
    print(report.to_json() if args.json else report.to_text())
    return 0 if report.passed else EXIT_FAILED


