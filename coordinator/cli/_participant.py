"""``txc participant check HOST:PORT --scenario FILE``: the conformance checker's front end.

Exit codes: 0 every case passed (or was skipped by the scenario); 1 a case failed; 2 bad
command line or scenario file.
"""

from __future__ import annotations

import argparse
import asyncio

from .._conformance import CASES, ScenarioError, check, load_scenario
from ..rpc._tls import TlsFiles
from ._common import env_default, read_optional

EXIT_FAILED, EXIT_USAGE = 1, 2


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
    p.add_argument("--tls-ca", default=env_default("TXC_TLS_CA", ""), metavar="FILE",
                   help="PEM CA certificates: talk TLS to a participant serving it")
    p.add_argument("--tls-cert", default=env_default("TXC_TLS_CERT", ""), metavar="FILE",
                   help="PEM client certificate, for a participant requiring one (with --tls-key)")
    p.add_argument("--tls-key", default=env_default("TXC_TLS_KEY", ""), metavar="FILE",
                   help="PEM private key of --tls-cert")
    p.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"txc participant check: --scenario {exc}")
        return EXIT_USAGE
    report = asyncio.run(check(args.address, scenario, tls_ca=_ca(args), tls_identity=_identity(args),
                               timeout_s=args.timeout, only=set(args.case) or None))
    print(report.to_json() if args.json else report.to_text())
    return 0 if report.passed else EXIT_FAILED


def _ca(args: argparse.Namespace) -> bytes | None:
    return read_optional("txc participant check", "--tls-ca", args.tls_ca)


def _identity(args: argparse.Namespace) -> TlsFiles | None:
    if not args.tls_cert and not args.tls_key:
        return None
    if not (args.tls_cert and args.tls_key and args.tls_ca):
        raise SystemExit("txc participant check: --tls-cert and --tls-key go together, with --tls-ca")
    cert = read_optional("txc participant check", "--tls-cert", args.tls_cert)
    key = read_optional("txc participant check", "--tls-key", args.tls_key)
    assert cert is not None and key is not None
    return TlsFiles(cert, key)
