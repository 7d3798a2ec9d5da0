"""The session guard: the database ends a session of this SDK's that goes silent.

A connection lost mid-call (a partition, a reset that never arrived) can leave its session
open on the server, holding the row locks of a barrier or business transaction, or on
MySQL a prepared XID no other session may finish, until TCP gives up hours later. Every
connection the SDK uses asks the server to end the session after ``seconds`` of silence:
PostgreSQL ``idle_in_transaction_session_timeout`` (silence inside a transaction),
MySQL/MariaDB ``wait_timeout`` (any silence: an idle pooled connection is closed too, and
replaced when the retry of the next call reconnects).

The setting is the session's, made once per connection and remembered in its ``info``
(a pooled connection keeps it), not a statement in every transaction.
"""

from __future__ import annotations

import math

from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.participant._db.sql import is_mysql

_GUARDED = "txc_session_guard"  # key in a connection's info: the guard statement it ran


def guard_statement(conn: AsyncConnection, seconds: float) -> str:
    if is_mysql(conn):
        return f"SET SESSION wait_timeout = {max(1, math.ceil(seconds))}"
    return f"SET idle_in_transaction_session_timeout = {max(1, round(seconds * 1000))}"


async def guard_session(conn: AsyncConnection, seconds: float) -> None:
    """Guard ``conn``'s session; call it before opening a transaction (a SET inside one
    that rolls back would not stay)."""
    statement = guard_statement(conn, seconds)
    if conn.info.get(_GUARDED) == statement:
        return
    await conn.exec_driver_sql(statement)
    await conn.commit()
    conn.info[_GUARDED] = statement


def mark_guarded(conn: AsyncConnection, statement: str) -> None:
    """Record that ``statement`` (from :func:`guard_statement`) ran on ``conn`` as part of
    another SET."""
    conn.info[_GUARDED] = statement
