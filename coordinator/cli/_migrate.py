"""``txc migrate``: create/upgrade the participant tables, or roll them back, and purge.

txc migrate --dsn postgresql://app@db/app                    # up to head
txc migrate --dsn ... --down 0001_barrier                    # down to a revision (or base)
txc migrate --dsn ... --purge-older-than-days 30             # up, then retention
txc migrate --dsn ... --status                               # only report the revision

A DSN naming no driver (postgresql://, postgres://, mysql://, mariadb://) runs on the SDK's
async drivers, asyncpg and aiomysql, as everywhere the SDK takes a DSN.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.participant import PurgeResult, purge, purge_two_phase, upgrade
from coordinator.participant.schema import current_revision, downgrade, head_revision, mask

from ._dsn import add_dsn_flag, run_on_dsn


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate",
        help="create or upgrade the participant tables (txc_barrier, txc_outbox, txc_xa)",
        description="Apply the participant SDK's migrations (tables txc_barrier, txc_outbox, "
                    "txc_xa; history in txc_alembic_version) and report the revision.",
    )
    add_dsn_flag(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--down", metavar="REV", help="migrate down to REV ('base' drops the tables)")
    what.add_argument("--status", action="store_true", help="report the revision, change nothing")
    p.add_argument(
        "--purge-older-than-days",
        type=float,
        metavar="N",
        help="after migrating, delete barrier rows, sent messages and finished 2PC branch "
             "rows (txc_xa) older than N days",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.purge_older_than_days is not None and (args.down or args.status):
        print("txc migrate: --purge-older-than-days cannot be combined with --down/--status", file=sys.stderr)
        return 2
    if args.purge_older_than_days is not None and args.purge_older_than_days <= 0:
        print("txc migrate: --purge-older-than-days must be positive", file=sys.stderr)
        return 2
    return run_on_dsn("txc migrate", args, lambda engine: _run(args, engine))


async def _run(args: argparse.Namespace, engine: AsyncEngine) -> int:
    where = mask(engine.url)
    if args.status:
        revision = await current_revision(engine)
    elif args.down:
        revision = await downgrade(engine, args.down)
    else:
        revision = await upgrade(engine)
    head = head_revision()
    state = "head" if revision == head else f"head is {head}"
    print(f"{where}: at revision {revision or 'base (no tables)'} ({state})")
    if args.purge_older_than_days is not None:
        days = args.purge_older_than_days
        _report(await purge(engine, days), await purge_two_phase(engine, days), days)
    return 0


def _report(result: PurgeResult, two_phase_rows: int, days: float) -> None:
    print(
        f"purged {result.barrier_rows} barrier rows, {result.outbox_rows} sent messages and "
        f"{two_phase_rows} finished 2PC branch rows older than {days:g} days"
    )
