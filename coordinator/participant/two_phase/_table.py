"""``txc_xa``: one row per prepared (or refused, or aborted) 2PC branch, keyed by its XID.

The row is committed *before* the local transaction starts, outside it: a prepared
transaction is invisible to other connections until it is resolved, so the mapping
XID -> (gid, branch) that recovery needs must live elsewhere. ``state`` records what this
service answered; a locking read of the row serializes every call for one branch.

Inside the prepared transaction itself the SDK writes the branch's barrier row
``(gid, branch, "prepare")``: it becomes visible exactly when the branch commits, so it
tells "committed" from "rolled back / never prepared" when the XID is gone (a commit
retried after a crash: MariaDB error 1397, PostgreSQL 42704).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.participant._db.barrier_sql import barrier_sql
from coordinator.participant._db.sql import db_now, is_mysql
from coordinator.participant._db.tables import MESSAGE_CHARS, OPERATION_CHARS, XA_TABLE, barrier, xa
from coordinator.participant._types import BranchKey, Op, Outcome


class XaState(StrEnum):
    PREPARING = "preparing"  # claimed; the local transaction may or may not be prepared
    PREPARED = "prepared"  # voted yes
    REFUSED = "refused"  # voted no: the business function refused, nothing was prepared
    COMMITTED = "committed"
    ABORTED = "aborted"  # rolled back, or the abort came first (a late prepare votes no)


# Finished rows: nothing in the database refers to them any more (retention may delete them).
FINISHED = (XaState.REFUSED, XaState.COMMITTED, XaState.ABORTED)


@dataclass(frozen=True)
class XaRow:
    xid: str
    gid: str
    branch: str
    operation: str
    state: XaState
    message: str
    result: bytes
    created_at: datetime


@dataclass(frozen=True)
class Locked:
    """What a call reads from the row it locked."""

    state: XaState
    message: str
    result: bytes


@dataclass(frozen=True)
class _Sql:
    """The per-call statements as driver SQL (positional parameters, $n / %s): fixed
    strings, so no Core construct is built or compiled per call (see ``barrier_sql``)."""

    claim: str  # xid, gid, branch, operation, state
    exists: str  # xid
    lock: str  # xid -> state, message, result; SKIP LOCKED
    set_state: str  # state, message, result, xid
    mysql: bool


_CLAIM_COLUMNS = "xid, gid, branch, operation, state, created_at, updated_at"
_POSTGRES = _Sql(
    claim=(f"INSERT INTO {XA_TABLE} ({_CLAIM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, now(), now()) "
           "ON CONFLICT DO NOTHING"),
    exists=f"SELECT 1 FROM {XA_TABLE} WHERE xid = $1",
    lock=f"SELECT state, message, result FROM {XA_TABLE} WHERE xid = $1 FOR UPDATE SKIP LOCKED",
    set_state=(f"UPDATE {XA_TABLE} SET state = $1, message = $2, result = $3, updated_at = now() "
               "WHERE xid = $4"),
    mysql=False,
)
_MYSQL = _Sql(
    claim=(f"INSERT IGNORE INTO {XA_TABLE} ({_CLAIM_COLUMNS}) "
           "VALUES (%s, %s, %s, %s, %s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))"),
    exists=f"SELECT 1 FROM {XA_TABLE} WHERE xid = %s",
    lock=f"SELECT state, message, result FROM {XA_TABLE} WHERE xid = %s FOR UPDATE SKIP LOCKED",
    # Blobs travel as hex through UNHEX() on MySQL (see ``sql.blob``); UNHEX(NULL) is NULL.
    set_state=(f"UPDATE {XA_TABLE} SET state = %s, message = %s, result = UNHEX(%s), "
               "updated_at = UTC_TIMESTAMP(6) WHERE xid = %s"),
    mysql=True,
)


def _sql(conn: AsyncConnection) -> _Sql:
    return _MYSQL if is_mysql(conn) else _POSTGRES


async def claim(conn: AsyncConnection, xid: str, key: BranchKey, operation: str, state: XaState) -> bool:
    """Insert the branch's row in ``state`` unless it exists; True when inserted."""
    sql = _sql(conn)
    if sql.mysql and await exists(conn, xid):
        return False  # MySQL's INSERT IGNORE would wait for the lock a twin holds on the row
    params = (xid, key.gid, key.branch, operation[:OPERATION_CHARS], state.value)
    return (await conn.exec_driver_sql(sql.claim, params)).rowcount == 1


async def lock(conn: AsyncConnection, xid: str) -> Locked | None:
    """The row, locked for this transaction; None if missing or locked by another one
    (SKIP LOCKED: calls never queue behind a twin)."""
    found = (await conn.exec_driver_sql(_sql(conn).lock, (xid,))).first()
    if found is None:
        return None
    state, message, result = tuple(found)
    return Locked(XaState(state), message or "", bytes(result) if result else b"")


async def exists(conn: AsyncConnection, xid: str) -> bool:
    """A plain read: never waits for the row's lock."""
    return (await conn.exec_driver_sql(_sql(conn).exists, (xid,))).first() is not None


async def rows(conn: AsyncConnection, xids: list[str]) -> list[XaRow]:
    if not xids:
        return []
    result = await conn.execute(select(xa).where(xa.c.xid.in_(xids)))
    return [_row(row) for row in result]


def _row(row: object) -> XaRow:
    m = row._mapping  # type: ignore[attr-defined]
    return XaRow(
        m["xid"], m["gid"], m["branch"], m["operation"], XaState(m["state"]), m["message"] or "",
        m["result"] or b"", m["created_at"],
    )


async def set_state(
    conn: AsyncConnection, xid: str, state: XaState, message: str = "", result: bytes = b""
) -> None:
    sql = _sql(conn)
    blob: bytes | str | None = (result.hex() if sql.mysql else result) if result else None
    await conn.exec_driver_sql(sql.set_state, (state.value, message[:MESSAGE_CHARS] or None, blob, xid))


async def server_now(conn: AsyncConnection) -> datetime:
    value: datetime = (await conn.execute(select(db_now(conn)))).scalar_one()
    return value


# -- the witness: the prepare barrier row, written inside the prepared transaction -------


async def write_witness(conn: AsyncConnection, key: BranchKey) -> None:
    """The prepare barrier row, holding the reply OK (the barrier's own insert statement)."""
    params = (key.gid, key.branch, Op.PREPARE.value, Op.PREPARE.value, int(Outcome.OK), None)
    await conn.exec_driver_sql(barrier_sql(conn).insert, params)


async def witness_committed(conn: AsyncConnection, key: BranchKey) -> bool:
    """True once the branch's prepared transaction has committed (a plain read: it never
    waits for a prepared transaction's lock, and sees only committed rows)."""
    stmt = select(barrier.c.id).where(
        and_(barrier.c.gid == key.gid, barrier.c.branch == key.branch, barrier.c.op == Op.PREPARE.value)
    )
    return (await conn.execute(stmt)).first() is not None
