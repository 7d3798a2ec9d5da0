"""The few statements that differ between PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, func, insert, literal_column
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import DateTime, LargeBinary


def is_mysql(conn: AsyncConnection) -> bool:
    """MySQL and MariaDB (SQLAlchemy names both "mysql" under the aiomysql driver)."""
    return conn.dialect.name in ("mysql", "mariadb")


def db_now(conn: AsyncConnection) -> ColumnElement[datetime]:
    """The database server's current UTC time.

    Server time, not the host's clock, so that leases and retention cutoffs agree across
    relay instances on different machines.
    """
    if is_mysql(conn):
        return func.utc_timestamp(6, type_=DateTime())
    return func.now(type_=DateTime(timezone=True))


def db_shifted(conn: AsyncConnection, seconds: float) -> ColumnElement[datetime]:
    """Server UTC time plus ``seconds`` (negative for the past)."""
    if is_mysql(conn):
        micros = int(seconds * 1_000_000)
        return func.timestampadd(
            literal_column("MICROSECOND"), micros, func.utc_timestamp(6), type_=DateTime()
        )
    return db_now(conn) + timedelta(seconds=seconds)


def age(now: datetime, then: datetime) -> float:
    """Seconds between two server timestamps (naive UTC on MySQL, aware on PostgreSQL)."""
    delta: timedelta = now - then
    return max(0.0, delta.total_seconds())


async def insert_ignore(conn: AsyncConnection, table: Table, values: Mapping[str, Any]) -> bool:
    """Insert one row unless a unique key already holds it; True when inserted.

    On a conflict with a row another transaction has not committed yet, both databases
    wait for that transaction to finish: this is what serializes concurrent twins.
    """
    if is_mysql(conn):
        stmt = insert(table).prefix_with("IGNORE").values(**values)
    else:
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    result = await conn.execute(stmt)
    return result.rowcount == 1


def blob(conn: AsyncConnection, data: bytes) -> bytes | ColumnElement[bytes]:
    """A bytes value to write into a blob column.

    On MySQL it travels as hex text through UNHEX(): aiomysql (0.3.x) cannot bind bytes
    parameters with PyMySQL 1.2+, which dropped the escaping function it imports.
    """
    if is_mysql(conn):
        return func.unhex(data.hex(), type_=LargeBinary())
    return data
