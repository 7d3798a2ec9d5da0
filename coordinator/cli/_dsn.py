"""What the commands on a participant's database (``txc migrate``, ``txc outbox``) share:
the ``--dsn`` flag, and running against it with one mapping of errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.participant import DsnError, MigrationError, create_engine
from coordinator.participant.schema import check_connection, describe

EXIT_FAILED, EXIT_USAGE = 1, 2


def add_dsn_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dsn",
        default=os.environ.get("TXC_DSN", ""),
        help="the database's URL: postgresql://, postgres://, mysql:// or mariadb:// (run with "
        "asyncpg and aiomysql; +asyncpg / +aiomysql may be named) (env TXC_DSN)",
    )


def run_on_dsn(command: str, args: argparse.Namespace,
               work: Callable[[AsyncEngine], Awaitable[int]]) -> int:
    """Connect to ``args.dsn`` (a clean exit 2 naming the problem when it cannot), run
    ``work`` on the engine, dispose of it; a database error exits 1."""
    async def connected() -> int:
        engine = create_engine(args.dsn)
        try:
            await check_connection(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(connected())
    except DsnError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MigrationError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SQLAlchemyError as exc:
        print(f"{command}: database error: {describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
