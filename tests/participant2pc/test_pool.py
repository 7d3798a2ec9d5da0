"""MariaDB pools made by ``create_engine`` (``_db/pool.py``): a connection is pinged on
checkout only when it sat idle, and rolled back on return only when it holds a
transaction; counted by the server's own per-session status (``Com_admin_commands``
counts pings, ``Com_rollback`` rollbacks)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator.participant import create_engine
from coordinator.participant._db.pool import IDLE_PING_S

from ._service import rows
from .conftest import Db

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(dbs: dict[str, Db]) -> AsyncIterator[AsyncEngine]:
    """One pooled connection, so every checkout gets the same session."""
    made = create_engine(dbs["mariadb"].dsn, pool_size=1, max_overflow=0)
    try:
        yield made
    finally:
        await made.dispose()


async def counters(conn: AsyncConnection) -> tuple[int, int, int]:
    """(session id, pings, rollbacks) of ``conn``'s session."""
    found = dict((await conn.exec_driver_sql(
        "SHOW SESSION STATUS WHERE Variable_name IN ('Com_admin_commands', 'Com_rollback')")).all())
    session = (await conn.exec_driver_sql("SELECT CONNECTION_ID()")).scalar_one()
    await conn.commit()
    return int(session), int(found["Com_admin_commands"]), int(found["Com_rollback"])


async def test_a_connection_used_a_moment_ago_is_neither_pinged_nor_rolled_back(
        engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        first = await counters(conn)
    for _ in range(3):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))  # opens a transaction, which commit ends
            await conn.commit()
    async with engine.connect() as conn:
        assert await counters(conn) == first  # the same session: no ping, no ROLLBACK


async def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(
        engine: AsyncEngine, dbs: dict[str, Db]) -> None:
    async with engine.connect() as conn:
        session, pings, _ = await counters(conn)
    await asyncio.sleep(IDLE_PING_S + 0.2)
    async with engine.connect() as conn:
        assert (await counters(conn))[:2] == (session, pings + 1)  # pinged, still alive
    async with dbs["mariadb"].engine.connect() as admin:
        await admin.exec_driver_sql(f"KILL CONNECTION {session}")  # as wait_timeout does
    await asyncio.sleep(IDLE_PING_S + 0.2)
    async with engine.connect() as conn:  # the ping fails: a new connection, no error
        assert (await counters(conn))[0] != session


async def test_a_connection_returned_inside_a_transaction_is_rolled_back(
        engine: AsyncEngine, dbs: dict[str, Db]) -> None:
    row = f"pool-{uuid.uuid4().hex[:8]}"
    async with engine.connect() as conn:
        session, _, rollbacks = await counters(conn)
        # Behind SQLAlchemy's back, so that only the pool's reset can end the transaction.
        raw = (await conn.get_raw_connection()).driver_connection
        async with raw.cursor() as cursor:
            await cursor.execute(f"INSERT INTO {rows.name} (id, v) VALUES (%s, 1)", (row,))
    async with engine.connect() as conn:
        assert (await counters(conn))[0::2] == (session, rollbacks + 1)
    async with dbs["mariadb"].engine.connect() as other:  # the row and its lock are gone
        await other.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 2")
        await other.execute(rows.insert().values(id=row, v=2))
        await other.rollback()
        await other.invalidate()  # drop the session setting with the connection
