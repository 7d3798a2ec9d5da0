"""Real PostgreSQL and MariaDB for the participant SDK tests.

Each session creates its own databases (``txc_sdk_<pid>``), migrates them with the SDK's
own migrations, and drops them at the end. Server DSNs can be overridden with
TXC_TEST_PG_DSN / TXC_TEST_MYSQL_DSN (any existing database on the server).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from coordinator.participant import create_engine, upgrade
from coordinator.participant._db.migrations import head_revision

SERVERS = {
    "postgresql": os.environ.get("TXC_TEST_PG_DSN", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("TXC_TEST_MYSQL_DSN", "mysql+aiomysql://root@127.0.0.1:3306/test"),
}

# The business side of the tests: balances, and one row per business effect that
# committed (what "exactly once" is checked against).
business = MetaData()
accounts = Table(
    "sdk_accounts",
    business,
    Column("id", String(64), primary_key=True),
    Column("balance", BigInteger, nullable=False),
)
effects = Table(
    "sdk_effects",
    business,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gid", String(128), nullable=False),
    Column("op", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class Db:
    kind: str
    dsn: str
    engine: AsyncEngine

    async def count_effects(self, gid: str, op: str | None = None) -> int:
        stmt = select(func.count()).select_from(effects).where(effects.c.gid == gid)
        if op is not None:
            stmt = stmt.where(effects.c.op == op)
        async with self.engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def open_transactions(self) -> int:
        """Transactions still open in this database (none may be left behind)."""
        name = make_url(self.dsn).database
        if self.kind == "postgresql":
            sql = ("SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                   "AND state LIKE 'idle in transaction%'")
        else:
            sql = ("SELECT count(*) FROM information_schema.innodb_trx t "
                   "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                   "WHERE p.db = :db")
        async with self.engine.connect() as conn:
            return int((await conn.execute(text(sql), {"db": name})).scalar_one())


def server_url(kind: str, database: str) -> str:
    return make_url(SERVERS[kind]).set(database=database).render_as_string(hide_password=False)


async def _admin(kind: str, statement: str) -> None:
    engine = create_async_engine(SERVERS[kind], isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(kind: str, name: str) -> str:
    await _admin(kind, f"DROP DATABASE IF EXISTS {name}")
    await _admin(kind, f"CREATE DATABASE {name}")
    return server_url(kind, name)


async def drop_database(kind: str, name: str) -> None:
    force = " WITH (FORCE)" if kind == "postgresql" else ""
    await _admin(kind, f"DROP DATABASE IF EXISTS {name}{force}")


@pytest.fixture(scope="session", params=sorted(SERVERS))
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Db]:
    """A migrated database on each server, shared by the session (tests use fresh gids)."""
    kind: str = request.param
    name = f"txc_sdk_{os.getpid()}"
    dsn = await create_database(kind, name)
    engine = create_engine(dsn, pool_size=30, max_overflow=10)
    try:
        assert await upgrade(engine) == head_revision()
        async with engine.begin() as conn:
            await conn.run_sync(business.create_all)
        yield Db(kind, dsn, engine)
    finally:
        await engine.dispose()
        await drop_database(kind, name)


@pytest.fixture
def gid() -> str:
    return f"g-{uuid.uuid4().hex[:12]}"


async def new_account(conn: AsyncConnection, balance: int) -> str:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    await conn.execute(accounts.insert().values(id=account, balance=balance))
    return account
