"""``txc outbox``: an operator's view of a service's outbox, and its two repairs.

txc outbox list --dsn URL [--status failed] [--kind K] [--limit 100] [--json]
txc outbox retry ID... | --all [--kind K] --reason TEXT --dsn URL   # failed -> pending
txc outbox discard ID... --reason TEXT --dsn URL                    # never to be sent

Exit codes: 0 done; 1 some id could not be changed (unknown, or in the wrong status), or a
database error; 2 bad command line or DSN. Payloads are never printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.participant import outbox
from coordinator.participant.outbox import Change, OutboxRow, Status

from ..client._coordinator import default_actor
from ._dsn import EXIT_FAILED, EXIT_USAGE, add_dsn_flag, run_on_dsn
from ._render import table

Work = Callable[[argparse.Namespace, AsyncEngine], Awaitable[int]]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    box = sub.add_parser("outbox", help="list a service's outbox messages; retry or discard one",
                         description="The outbox table (txc_outbox) of one service's database.")
    cmds = box.add_subparsers(dest="outbox_command", required=True)

    ls = cmds.add_parser("list", help="messages, newest first: status, kind, gid, attempts, "
                                      "last error (never payloads)")
    add_dsn_flag(ls)
    ls.add_argument("--status", action="append", choices=[s.value for s in Status], default=[],
                    help="repeatable (default: every status but sent)")
    ls.add_argument("--kind", default="", help="only messages of this kind")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_command(_list))

    retry = cmds.add_parser("retry", help="put failed messages back to pending (after a fix)")
    add_dsn_flag(retry)
    retry.add_argument("ids", nargs="*", type=int, metavar="ID")
    retry.add_argument("--all", action="store_true", help="every failed message (of --kind)")
    retry.add_argument("--kind", default="", help="with --all: only messages of this kind")
    retry.add_argument("--reason", required=True, help="recorded in the row and logged")
    retry.set_defaults(func=_command(_retry, _retry_usage))

    discard = cmds.add_parser("discard", help="mark pending or failed messages never to be sent")
    add_dsn_flag(discard)
    discard.add_argument("ids", nargs="+", type=int, metavar="ID")
    discard.add_argument("--reason", required=True, help="recorded in the row and logged")
    discard.set_defaults(func=_command(_discard))


def _command(work: Work, usage: Callable[[argparse.Namespace], str] = lambda _: ""
             ) -> Callable[[argparse.Namespace], int]:
    """Check the command line (``usage``: what is wrong, "" if nothing), then connect."""
    def run(args: argparse.Namespace) -> int:
        wrong = usage(args)
        if wrong:
            print(f"txc outbox: {wrong}", file=sys.stderr)
            return EXIT_USAGE
        try:
            return run_on_dsn("txc outbox", args, lambda engine: work(args, engine))
        except ValueError as exc:  # the reason, as the coordinator's rule for one has it
            print(f"txc outbox: --{exc}", file=sys.stderr)
            return EXIT_USAGE
    return run


def _retry_usage(args: argparse.Namespace) -> str:
    if args.all == bool(args.ids):
        return "retry: give IDs or --all, not both"
    if args.kind and not args.all:
        return "retry: --kind goes with --all"
    return ""


async def _list(args: argparse.Namespace, engine: AsyncEngine) -> int:
    statuses = [Status(s) for s in args.status] or list(outbox.UNSENT)
    rows = await outbox.messages(engine, statuses=statuses, kind=args.kind, limit=args.limit)
    if args.json:
        print(json.dumps([_dict(r) for r in rows], indent=2))
    else:
        print(_render(rows))
    return 0


async def _retry(args: argparse.Namespace, engine: AsyncEngine) -> int:
    ids = await outbox.failed_ids(engine, args.kind) if args.all else args.ids
    if not ids:
        print("no failed messages")
        return 0
    return _report(await outbox.retry(engine, ids, actor=default_actor(), reason=args.reason),
                   "pending again")


async def _discard(args: argparse.Namespace, engine: AsyncEngine) -> int:
    return _report(await outbox.discard(engine, args.ids, actor=default_actor(), reason=args.reason),
                   "discarded")


def _report(changes: list[Change], done: str) -> int:
    for c in changes:
        if c.done:
            print(f"message {c.id}: {done}")
        else:
            print(f"txc outbox: message {c.id}: {c.problem}", file=sys.stderr)
    return 0 if all(c.done for c in changes) else EXIT_FAILED


def _when(moment: dt.datetime) -> str:
    """Server time as stored: aware on PostgreSQL, naive UTC on MySQL."""
    utc = moment.astimezone(dt.UTC) if moment.tzinfo else moment
    return utc.strftime("%Y-%m-%d %H:%M:%S")


def _render(rows: list[OutboxRow]) -> str:
    if not rows:
        return "no messages match"
    return table(("ID", "STATUS", "KIND", "GID", "ATTEMPTS", "CREATED (UTC)", "LAST ERROR"),
                 [(str(r.id), r.status, r.kind, r.gid or "-", str(r.attempts), _when(r.created_at),
                   r.last_error[:80]) for r in rows])


def _dict(row: OutboxRow) -> dict[str, object]:
    return {"id": row.id, "status": row.status, "kind": row.kind, "gid": row.gid,
            "attempts": row.attempts, "created_at": _when(row.created_at),
            "available_at": _when(row.available_at), "last_error": row.last_error}
