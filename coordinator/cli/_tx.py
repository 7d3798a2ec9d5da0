"""``txc tx``: find, inspect and repair transactions through the Coordinator API.

Exit codes: 0 done; 1 the coordinator refused (FAILED_PRECONDITION, INVALID_ARGUMENT, ...);
2 bad command line; 3 unknown gid; 4 coordinator unreachable; 5 (``--wait``) the transaction
did not finish: FAILED again, or still going when the wait ran out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..client._bulk import DONE, applies, perform
from ..client._coordinator import (
    TERMINAL_STATES,
    CoordinatorClient,
    ListFilter,
    WaitTimedOut,
    settled,
)
from ..client._vocabulary import PROTOCOLS, STATES, is_unreachable, parse_duration
from ..domain.operator import may_replay
from ..domain.records import TxState
from ._common import add_shared_flags, add_tls_client_flags, env_default, read_optional, tls_client
from ._render import render_list, render_show

CONFIRM_ABOVE = 20  # a bulk action on more asks first (or needs --yes)
BULK_RATE = 10.0  # bulk actions per second: a coordinator's other work goes on meanwhile
MAX_BULK = 10_000
EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_UNFINISHED = 1, 2, 3, 4, 5
REPLAYABLE = sorted(n for n, v in STATES.items() if may_replay(TxState(v)))


def _client_flags(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The connection flags; on every ``txc tx`` command, before or after its name."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--coordinator", default=default(env_default("TXC_COORDINATOR", "127.0.0.1:7070")),
                   help="HOST:PORT of any coordinator, or several comma-separated (calls fail "
                        "over between them; env TXC_COORDINATOR)")
    p.add_argument("--timeout", type=float, default=default(10.0), help="seconds per request")
    add_tls_client_flags(p, "a coordinator", default)
    p.add_argument("--token-file", default=default(env_default("TXC_OPERATOR_TOKEN_FILE", "")),
                   metavar="FILE", help="file holding this operator's token, for a coordinator "
                   "started with --operator-tokens (env TXC_OPERATOR_TOKEN_FILE)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tx = sub.add_parser("tx", help="list, show, replay, skip or abort transactions")
    _client_flags(tx, defaults=True)
    cmds = tx.add_subparsers(dest="tx_command", required=True)
    command = add_shared_flags(cmds, lambda p: _client_flags(p, defaults=False))

    ls = command("list", help="transactions, newest first")
    ls.add_argument("--state", action="append", choices=sorted(STATES), default=[])
    ls.add_argument("--protocol", choices=sorted(PROTOCOLS))
    ls.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    ls.add_argument("--gid-prefix", default="")
    ls.add_argument("--participant", default="", metavar="HOST:PORT",
                    help="transactions with a branch at this address")
    ls.add_argument("--older-than", type=duration, metavar="AGE", help="e.g. 90s, 10m, 2h, 1d")
    ls.add_argument("--limit", type=int, default=100)
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--jsonl", action="store_true")
    ls.set_defaults(func=_sync(_list))

    show = command("show", help="one transaction with its branch timeline and history")
    show.add_argument("gid")
    show.add_argument("--watch", action="store_true", help="follow it until it settles")
    show.add_argument("--json", action="store_true")
    show.add_argument("--payloads", action="store_true",
                      help="also print each branch's payload (needs the read right when the "
                           "coordinator has operators; never with --watch). A finished "
                           "transaction no longer keeps them")
    show.set_defaults(func=_sync(_show))

    replay = command("replay", help="re-drive a FAILED or stuck transaction")
    _bulk_flags(replay, REPLAYABLE, "(default failed)")
    _wait_flags(replay)
    replay.set_defaults(func=_sync(_bulk_action))

    skip = command("skip", help="mark a branch done by hand")
    skip.add_argument("gid")
    skip.add_argument("branch")
    skip.add_argument("--reason", required=True)
    _wait_flags(skip)
    skip.set_defaults(func=_sync(_skip))

    abort = command("abort", help="saga: compensate; 2PC: abort unless commit was decided")
    _bulk_flags(abort, sorted(STATES), "(default: any an abort acts on)")
    _wait_flags(abort)
    abort.set_defaults(func=_sync(_bulk_action))

    pause = command("pause", help="stop driving a transaction after the calls in flight; its "
                    "deadline stands still until resumed")
    _bulk_flags(pause, sorted(STATES), "(default: any still moving)")
    pause.set_defaults(func=_sync(_bulk_action), wait=False)

    resume = command("resume", help="drive a paused transaction again (its deadline moves by "
                     "the time paused)")
    _bulk_flags(resume, sorted(STATES), "(default: any paused)")
    _wait_flags(resume)
    resume.set_defaults(func=_sync(_bulk_action))


def _bulk_flags(p: argparse.ArgumentParser, states: list[str], default_states: str) -> None:
    """GID, or --all with the list's filters: the same flags on every bulk action."""
    p.add_argument("gid", nargs="?")
    p.add_argument("--reason", required=True)
    p.add_argument("--all", action="store_true", help="every transaction matching the filters")
    p.add_argument("--state", action="append", choices=states, default=[],
                   help=f"with --all: transactions in this state {default_states}")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--gid-prefix", default="")
    p.add_argument("--participant", default="", metavar="HOST:PORT",
                   help="with --all: transactions with a branch at this address")
    p.add_argument("--older-than", type=duration, metavar="AGE")
    p.add_argument("--dry-run", action="store_true",
                   help="list exactly what --all would act on, and do nothing")
    p.add_argument("--yes", action="store_true",
                   help="act on more than --confirm-above transactions without asking")
    p.add_argument("--confirm-above", type=int, default=CONFIRM_ABOVE, metavar="N",
                   help=f"ask before acting on more than N (default {CONFIRM_ABOVE})")
    p.add_argument("--rate", type=float, default=BULK_RATE, metavar="PER_S",
                   help=f"actions per second (default {BULK_RATE:g})")


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="print the outcome once the transaction has settled, not the state the "
                        "action left it in (exit 5 unless it finished)")
    p.add_argument("--wait-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long --wait waits (default 60)")


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


Command = Callable[[argparse.Namespace, CoordinatorClient], Awaitable[int]]


def _sync(fn: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(_connected(args, fn))
    return run


async def _connected(args: argparse.Namespace, fn: Command) -> int:
    token = read_optional("txc", "--token-file", args.token_file)
    tls_ca, identity = tls_client("txc", args)
    client = CoordinatorClient(args.coordinator, timeout_s=args.timeout, tls_ca=tls_ca,
                               tls_identity=identity,
                               token=token.decode().strip() if token else None)
    try:
        return await fn(args, client)
    except grpc.aio.AioRpcError as exc:
        return _explain(args, exc)
    finally:
        await client.close()


def _explain(args: argparse.Namespace, exc: grpc.aio.AioRpcError) -> int:
    code = exc.code()
    if is_unreachable(code):
        print(f"txc: coordinator {args.coordinator} unreachable: {exc.details()}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"txc: {code.name.lower()}: {exc.details()}", file=sys.stderr)
    return EXIT_NOT_FOUND if code == grpc.StatusCode.NOT_FOUND else EXIT_REFUSED


async def _matching(args: argparse.Namespace, client: CoordinatorClient,
                    limit: int) -> list[pb.Transaction]:
    labels = dict(item.split("=", 1) for item in getattr(args, "label", []) if "=" in item)
    where = ListFilter(states=[STATES[s] for s in args.state],
                       protocol=PROTOCOLS.get(getattr(args, "protocol", None) or "",
                                              pb.PROTOCOL_UNSPECIFIED),
                       labels=labels, gid_prefix=getattr(args, "gid_prefix", ""),
                       participant=getattr(args, "participant", ""))
    cutoff = time.time() - args.older_than if args.older_than else None
    found = [tx async for tx in client.list_all(where)
             if cutoff is None or tx.created_at.seconds <= cutoff]
    found.sort(key=lambda t: (t.created_at.seconds, t.created_at.nanos), reverse=True)
    return found[:limit]


async def _list(args: argparse.Namespace, client: CoordinatorClient) -> int:
    txs = await _matching(args, client, args.limit)
    if args.json:
        print(json.dumps([_dict(t) for t in txs], indent=2))
    elif args.jsonl:
        for t in txs:
            print(json.dumps(_dict(t)))
    else:
        print(render_list(txs))
    return 0


async def _show(args: argparse.Namespace, client: CoordinatorClient) -> int:
    if args.payloads and args.watch:
        print("txc tx show: --payloads: not with --watch (a watch never carries payloads)",
              file=sys.stderr)
        return 2
    if not args.watch:
        tx = await client.get(args.gid, include_payloads=args.payloads)
        print(json.dumps(_dict(tx), indent=2) if args.json else render_show(tx))
        return 0
    async for tx in client.watch(args.gid):
        print(json.dumps(_dict(tx)) if args.json else render_show(tx) + "\n")
        if settled(tx):
            break
    return 0


async def _bulk_action(args: argparse.Namespace, client: CoordinatorClient) -> int:
    if args.tx_command == "replay" and args.all:
        args.state = args.state or ["failed"]
    return await _one_or_all(args, client, args.tx_command)


async def _one_or_all(args: argparse.Namespace, client: CoordinatorClient, action: str) -> int:
    """One GID, or every transaction the filters match that the action applies to (the
    same rules the coordinator enforces, so --dry-run lists exactly what would be done)."""
    if args.all == bool(args.gid):
        print("txc: give a GID or --all (with filters), not both", file=sys.stderr)
        return EXIT_USAGE
    if not args.all:
        return await _outcome(args, client, await perform(client, action, args.gid, args.reason))
    if args.wait:
        print("txc: --wait follows one transaction: give a GID, not --all", file=sys.stderr)
        return EXIT_USAGE
    if not args.rate > 0:
        print("txc: --rate must be positive", file=sys.stderr)
        return EXIT_USAGE
    done = DONE[action]
    txs = [t for t in await _matching(args, client, limit=MAX_BULK) if applies(action, t)]
    if args.dry_run:
        print(render_list(txs))
        print(f"{len(txs)} transaction(s) would be {done}")
        return 0
    if not _confirmed(args, len(txs), done):
        return EXIT_USAGE
    return await _act_on(args, client, txs, action)


def _confirmed(args: argparse.Namespace, count: int, done: str) -> bool:
    if count <= args.confirm_above or args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"txc: {count} transactions would be {done}, more than --confirm-above "
              f"{args.confirm_above}: pass --yes (see them first with --dry-run)", file=sys.stderr)
        return False
    answer = input(f"{count} transactions will be {done}. Type 'yes' to go on: ")
    return answer.strip() == "yes"


async def _act_on(args: argparse.Namespace, client: CoordinatorClient, txs: list[pb.Transaction],
                  action: str) -> int:
    """Act on each at most ``--rate`` per second; each gid acted on is printed."""
    refused, done = 0, DONE[action]
    for i, tx in enumerate(txs, 1):
        started = time.monotonic()
        try:
            await perform(client, action, tx.gid, args.reason)
            print(f"{done} {tx.gid}")
        except grpc.aio.AioRpcError as exc:
            refused += 1
            print(f"\ntxc: {tx.gid}: {exc.details()}", file=sys.stderr)
        _progress(i, len(txs))
        if i < len(txs):
            await asyncio.sleep(max(0.0, 1 / args.rate - (time.monotonic() - started)))
    print(f"\n{done} {len(txs) - refused} of {len(txs)}")
    return EXIT_REFUSED if refused else 0


async def _skip(args: argparse.Namespace, client: CoordinatorClient) -> int:
    return await _outcome(args, client, await client.skip(args.gid, args.branch, args.reason))


async def _outcome(args: argparse.Namespace, client: CoordinatorClient, tx: pb.Transaction) -> int:
    """What an operator action led to: the state it left the transaction in, or with
    ``--wait`` the outcome once settled (a snapshot taken at once shows work in flight)."""
    if not args.wait:
        print(render_show(tx))
        return 0
    try:
        tx = await client.wait_settled(tx.gid, args.wait_timeout)
    except WaitTimedOut as exc:
        if exc.transaction is not None:
            print(render_show(exc.transaction))
        print(f"txc: {exc.details()}", file=sys.stderr)
        return EXIT_UNFINISHED
    print(render_show(tx))
    return 0 if tx.state in TERMINAL_STATES else EXIT_UNFINISHED


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()


def _dict(tx: pb.Transaction) -> dict[str, Any]:
    return MessageToDict(tx, preserving_proto_field_name=True)
