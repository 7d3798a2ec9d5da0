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
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.participant._db.sql import blob, db_now, insert_ignore, is_mysql
from coordinator.participant._db.tables import MESSAGE_CHARS, OPERATION_CHARS, barrier, xa
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


async def claim(conn: AsyncConnection, xid: str, key: BranchKey, operation: str, state: XaState) -> bool:
    """Insert the branch's row in ``state`` unless it exists; True when inserted."""
    if is_mysql(conn) and await exists(conn, xid):
        return False  # MySQL's INSERT IGNORE would wait for the lock a twin holds on the row
    now = db_now(conn)
    values = {
        "xid": xid,
        "gid": key.gid,
        "branch": key.branch,
        "operation": operation[:OPERATION_CHARS],
        "state": state.value,
        "created_at": now,
        "updated_at": now,
    }
    return await insert_ignore(conn, xa, values)


async def lock(conn: AsyncConnection, xid: str, *, skip_locked: bool = False) -> XaRow | None:
    """The row, locked for this transaction; None if missing (or, with skip_locked, busy)."""
    stmt = select(xa).where(xa.c.xid == xid).with_for_update(skip_locked=skip_locked)
    row = (await conn.execute(stmt)).one_or_none()
    return None if row is None else _row(row)


async def exists(conn: AsyncConnection, xid: str) -> bool:
    """A plain read: never waits for the row's lock."""
    return (await conn.execute(select(xa.c.xid).where(xa.c.xid == xid))).first() is not None


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
    values = {
        "state": state.value,
        "message": message[:MESSAGE_CHARS] or None,
        "result": blob(conn, result) if result else None,
        "updated_at": db_now(conn),
    }
    await conn.execute(update(xa).where(xa.c.xid == xid).values(**values))


async def server_now(conn: AsyncConnection) -> datetime:
    value: datetime = (await conn.execute(select(db_now(conn)))).scalar_one()
    return value


def age(now: datetime, then: datetime) -> float:
    """Seconds between two server timestamps (naive UTC on MySQL, aware on PostgreSQL)."""
    delta: timedelta = now - then
    return max(0.0, delta.total_seconds())


# -- the witness: the prepare barrier row, written inside the prepared transaction -------


async def write_witness(conn: AsyncConnection, key: BranchKey) -> None:
    values = {
        "gid": key.gid,
        "branch": key.branch,
        "op": Op.PREPARE.value,
        "reason": Op.PREPARE.value,
        "outcome": int(Outcome.OK),
        "created_at": db_now(conn),
    }
    await conn.execute(barrier.insert().values(**values))


async def witness_committed(conn: AsyncConnection, key: BranchKey) -> bool:
    """True once the branch's prepared transaction has committed (a plain read: it never
    waits for a prepared transaction's lock, and sees only committed rows)."""
    stmt = select(barrier.c.id).where(
        and_(barrier.c.gid == key.gid, barrier.c.branch == key.branch, barrier.c.op == Op.PREPARE.value)
    )
    return (await conn.execute(stmt)).first() is not None
