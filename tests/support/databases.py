"""Real PostgreSQL and MariaDB for the SDK tests: per-session databases on shared servers.

Server DSNs can be overridden with TXC_TEST_PG_DSN / TXC_TEST_MYSQL_DSN (any existing
database on the server).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import MetaData, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from coordinator.participant import create_engine, upgrade
from coordinator.participant._db.migrations import head_revision

SERVERS = {
    "postgresql": os.environ.get("TXC_TEST_PG_DSN", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("TXC_TEST_MYSQL_DSN", "mysql+aiomysql://root@127.0.0.1:3306/test"),
}


@dataclass(frozen=True)
class Db:
    """A test database: ``kind`` is "postgresql" or "mariadb"; suites subclass it with
    helpers for their own business tables."""

    kind: str
    dsn: str
    engine: AsyncEngine


D = TypeVar("D", bound=Db)


def on_server(server: str, database: str) -> str:
    """``server``'s DSN naming ``database`` instead (password kept: it is used to connect)."""
    return make_url(server).set(database=database).render_as_string(hide_password=False)


async def admin(server: str, statement: str) -> None:
    """Run one statement outside any transaction (CREATE / DROP DATABASE)."""
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(server: str, name: str) -> str:
    """A new, empty database ``name`` (one left by an earlier run is dropped); its DSN."""
    await admin(server, f"DROP DATABASE IF EXISTS {name}")
    await admin(server, f"CREATE DATABASE {name}")
    return on_server(server, name)


async def drop_database(server: str, name: str) -> None:
    # PostgreSQL refuses to drop a database with sessions left; FORCE ends them.
    force = " WITH (FORCE)" if make_url(server).get_backend_name() == "postgresql" else ""
    await admin(server, f"DROP DATABASE IF EXISTS {name}{force}")


@asynccontextmanager
async def migrated(kind: str, server: str, name: str, business: MetaData,
                   make: Callable[[str, str, AsyncEngine], D], **engine_options: Any) -> AsyncIterator[D]:
    """Database ``name`` on ``server``, migrated to the head revision, with the suite's
    ``business`` tables; dropped afterwards."""
    dsn = await create_database(server, name)
    engine = create_engine(dsn, **engine_options)
    try:
        assert await upgrade(engine) == head_revision()
        async with engine.begin() as conn:
            await conn.run_sync(business.create_all)
        yield make(kind, dsn, engine)
    finally:
        await engine.dispose()
        await drop_database(server, name)
