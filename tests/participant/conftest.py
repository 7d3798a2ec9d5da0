"""Real PostgreSQL and MariaDB for the participant SDK tests.

Each session creates its own databases (``txc_sdk_<pid>``) on the servers of
tests/support/databases.py, migrates them with the SDK's own migrations, and drops them at
the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.support import databases

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
class Db(databases.Db):
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


@pytest.fixture(scope="session", params=sorted(databases.SERVERS))
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Db]:
    """A migrated database on each server, shared by the session (tests use fresh gids)."""
    kind: str = request.param
    async with databases.migrated(kind, databases.SERVERS[kind], f"txc_sdk_{os.getpid()}",
                                  business, Db, pool_size=30, max_overflow=10) as made:
        yield made


async def new_account(conn: AsyncConnection, balance: int) -> str:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    await conn.execute(accounts.insert().values(id=account, balance=balance))
    return account
