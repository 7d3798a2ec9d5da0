"""Alembic environment for the txcoord participant tables (txc_barrier, txc_outbox, txc_xa).

The scripts here are package data of the SDK (not a Python package): ``txc migrate --dsn
URL`` and ``coordinator.participant.upgrade`` run them, from a wheel as from a checkout.

The database URL comes, in this order, from a connection handed over by
``coordinator.participant`` (``config.attributes["connection"]``), ``-x dsn=URL``,
the ``TXC_DSN`` environment variable, or ``sqlalchemy.url`` in alembic.ini. Async URLs
(postgresql+asyncpg, mysql+aiomysql) are run through an async engine.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from coordinator.participant._db.dsn import check_connection, parse
from coordinator.participant._db.errors import DsnError
from coordinator.participant._db.migrations import VERSION_TABLE
from coordinator.participant._db.tables import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    dsn = (
        context.get_x_argument(as_dictionary=True).get("dsn")
        or os.environ.get("TXC_DSN")
        or config.get_main_option("sqlalchemy.url")
    )
    if not dsn:
        raise SystemExit("no database: pass -x dsn=URL or set TXC_DSN")
    return dsn


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        # Only our tables: a shared database holds the service's own tables too.
        include_name=lambda name, type_, _parent: type_ != "table" or name in metadata.tables,
        **kwargs,
    )


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(dsn: str) -> None:
    try:
        engine = create_async_engine(parse(dsn), poolclass=pool.NullPool)
        await check_connection(engine)
    except DsnError as exc:
        raise SystemExit(str(exc)) from None
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async(_url()))


if context.is_offline_mode():
    run_offline()
else:
    run_online()
