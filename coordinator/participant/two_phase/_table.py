"""``txc_xa``: one row per prepared (or refused, or aborted) 2PC branch, keyed by its XID.

A prepared transaction is invisible to other connections until it is resolved, so the
mapping XID -> (gid, branch) that recovery needs lives here, committed by a short
transaction of its own *before* the ``PREPARE``, together with the vote it stands for (the
handler's result). ``state`` records what this service answered; every write after the
first is a compare-and-set on it, so concurrent calls for one branch cannot undo each
other's answers.

Inside the prepared transaction itself the SDK writes the branch's barrier row
``(gid, branch, "prepare")`` (the *witness*): it becomes visible exactly when the branch
commits, so it tells "committed" from "rolled back / never prepared" when the XID is gone
(MariaDB error 1397, PostgreSQL 42704), and while the transaction is open or prepared its
row lock keeps a second local transaction of the same branch from getting that far.
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
    PREPARING = "preparing"  # versions before 2026-12-05: claimed, the vote not recorded yet
    PREPARED = "prepared"  # voted yes, or about to (the row is written just before PREPARE)
    REFUSED = "refused"  # voted no: nothing is prepared
    COMMITTED = "committed"  # versions before 2026-12-05 (since: "prepared" + a visible witness)
    ABORTED = "aborted"  # rolled back, or the abort came first (a late prepare votes no)


# States whose XID may be prepared: phase 2 has work to do.
OPEN = (XaState.PREPARING, XaState.PREPARED)
# Finished rows: nothing in the database refers to them any more (retention may delete
# them; a "prepared" row is finished too once its XID is gone, see _retention).
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
class Found:
    """What a call reads from the branch's row."""

    state: XaState
    message: str
    result: bytes


@dataclass(frozen=True)
class _Sql:
    """The per-call statements as driver SQL (positional parameters, $n / %s): fixed
    strings, so no Core construct is built or compiled per call (see ``barrier_sql``)."""

    read: str  # xid -> state, message, result
    latest: str  # the same, reading the latest committed row whatever the snapshot
    claim: str  # xid, gid, branch, operation, state, message, result
    move: str  # state, message (NULL: keep), xid; from an open state only
    mysql: bool

    def blob(self, data: bytes) -> bytes | str | None:
        """``data`` as the statements bind it (hex for UNHEX() on MySQL, see ``sql.blob``);
        None for no bytes."""
        if not data:
            return None
        return data.hex() if self.mysql else data


_COLUMNS = "xid, gid, branch, operation, state, message, result, created_at, updated_at"
_READ = f"SELECT state, message, result FROM {XA_TABLE} WHERE xid = {{0}}"
_OPEN_STATES = ", ".join(f"'{s.value}'" for s in OPEN)
_MOVE = (f"UPDATE {XA_TABLE} SET state = {{0}}, message = COALESCE({{1}}, message), "
         f"updated_at = {{now}} WHERE xid = {{2}} AND state IN ({_OPEN_STATES})")
_POSTGRES = _Sql(
    read=_READ.format("$1"),
    latest=_READ.format("$1"),  # READ COMMITTED: every statement sees the latest commits
    claim=(f"INSERT INTO {XA_TABLE} ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now()) "
           "ON CONFLICT DO NOTHING"),
    move=_MOVE.format("$1", "$2", "$3", now="now()"),
    mysql=False,
)
_MYSQL = _Sql(
    read=_READ.format("%s"),
    # A locking read: the first read of the transaction fixed its REPEATABLE READ snapshot.
    latest=_READ.format("%s") + " LOCK IN SHARE MODE",
    # Blobs travel as hex through UNHEX() on MySQL (see ``sql.blob``); UNHEX(NULL) is NULL.
    claim=(f"INSERT IGNORE INTO {XA_TABLE} ({_COLUMNS}) "
           "VALUES (%s, %s, %s, %s, %s, %s, UNHEX(%s), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))"),
    move=_MOVE.format("%s", "%s", "%s", now="UTC_TIMESTAMP(6)"),
    mysql=True,
)


def _sql(conn: AsyncConnection) -> _Sql:
    return _MYSQL if is_mysql(conn) else _POSTGRES


async def read(conn: AsyncConnection, xid: str, *, latest: bool = False) -> Found | None:
    """The branch's row, a plain read that never waits (``latest``: past the transaction's
    snapshot, for a second read after a conflict)."""
    sql = _sql(conn)
    found = (await conn.exec_driver_sql(sql.latest if latest else sql.read, (xid,))).first()
    if found is None:
        return None
    state, message, result = tuple(found)
    return Found(XaState(state), message or "", bytes(result) if result else b"")


async def claim(conn: AsyncConnection, xid: str, key: BranchKey, operation: str, state: XaState,
                message: str = "", result: bytes = b"") -> bool:
    """Insert the branch's row unless it exists; True when inserted. Never waits: nothing
    holds a ``txc_xa`` row's lock for longer than one statement."""
    sql = _sql(conn)
    params = (xid, key.gid, key.branch, operation[:OPERATION_CHARS], state.value,
              message[:MESSAGE_CHARS] or None, sql.blob(result))
    return (await conn.exec_driver_sql(sql.claim, params)).rowcount == 1


async def move(conn: AsyncConnection, xid: str, state: XaState, message: str = "") -> bool:
    """Set an open row (preparing, prepared) to ``state``, keeping its stored vote (the
    result, and the message unless one is given); False if the row was no longer open."""
    params = (state.value, message[:MESSAGE_CHARS] or None, xid)
    return (await conn.exec_driver_sql(_sql(conn).move, params)).rowcount == 1


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


async def server_now(conn: AsyncConnection) -> datetime:
    value: datetime = (await conn.execute(select(db_now(conn)))).scalar_one()
    return value


# -- the witness: the prepare barrier row, written inside the prepared transaction -------


async def write_witness(conn: AsyncConnection, key: BranchKey) -> bool:
    """Insert the prepare barrier row, holding the reply OK (the barrier's own insert
    statement); False when it is there already, i.e. the branch has committed. Waits
    (up to the transaction's lock timeout) while another local transaction of the branch
    holds it: that one is running or prepared."""
    params = (key.gid, key.branch, Op.PREPARE.value, Op.PREPARE.value, int(Outcome.OK), None)
    return (await conn.exec_driver_sql(barrier_sql(conn).insert, params)).rowcount == 1


async def witness_committed(conn: AsyncConnection, key: BranchKey) -> bool:
    """True once the branch's prepared transaction has committed (a plain read: it never
    waits for a prepared transaction's lock, and sees only committed rows)."""
    stmt = select(barrier.c.id).where(
        and_(barrier.c.gid == key.gid, barrier.c.branch == key.branch, barrier.c.op == Op.PREPARE.value)
    )
    return (await conn.execute(stmt)).first() is not None
