"""``txc participant check HOST:PORT --scenario FILE``: the conformance checker's front end.

Exit codes: 0 every case passed (or was skipped by the scenario); 1 a case failed; 2 bad
command line or scenario file, or a scenario the service does not bear out (its ``observe``
fails: checked before any case runs); 3 the participant is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio

from .._conformance import CASES, ScenarioError, Unreachable, check, load_scenario
from ._common import add_tls_client_flags, tls_client

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


