"""The database side of 2PC: XA on MySQL/MariaDB, PREPARE TRANSACTION on PostgreSQL.

Every statement here runs on an AUTOCOMMIT connection: MySQL refuses ``XA START`` inside
a local transaction, PostgreSQL refuses ``COMMIT PREPARED`` inside one, and the local
transaction that gets prepared is opened explicitly (``XA START`` / ``BEGIN``).
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod

from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator.participant._db.dsn import mask
from coordinator.participant._db.errors import ParticipantError, describe
from coordinator.participant._db.session import guard_session, guard_statement, mark_guarded
from coordinator.participant._db.sql import is_mysql
from coordinator.participant._db.tables import XA_TABLE, xa
from coordinator.participant.two_phase._xid import XID_PREFIX, is_txc_xid, literal


class TwoPhaseUnavailable(ParticipantError):
    """The database cannot run this SDK's two-phase commit as configured."""


class XaDriver(ABC):
    """One database's statements for a branch's local transaction, by XID."""

    @abstractmethod
    async def preparing_session(self, conn: AsyncConnection) -> int | None:
        """The server's id of ``conn``'s session if it must end before another session may
        finish what ``conn`` prepared (MySQL/MariaDB: close ``conn``, then
        :func:`wait_session_gone`); None where preparing lets go at once (PostgreSQL)."""

    @abstractmethod
    async def begin(self, conn: AsyncConnection, xid: str, lock_timeout_s: float,
                    session_timeout_s: float) -> None:
        """Open the local transaction; its row-lock waits end after ``lock_timeout_s``
        (a prepared transaction holds its locks until phase 2, so waiting longer could
        pile every connection up behind one that is in doubt), and it is guarded."""

    @abstractmethod
    async def prepare(self, conn: AsyncConnection, xid: str) -> None: ...
    @abstractmethod
    async def rollback_active(self, conn: AsyncConnection, xid: str) -> None: ...
    @abstractmethod
    async def release(self, conn: AsyncConnection) -> None:
        """Undo what :meth:`begin` set on ``conn``'s session, before it goes back to the pool."""

    @abstractmethod
    async def commit_prepared(self, conn: AsyncConnection, xid: str) -> None: ...
    @abstractmethod
    async def rollback_prepared(self, conn: AsyncConnection, xid: str) -> None: ...
    @abstractmethod
    async def prepared(self, conn: AsyncConnection) -> list[str]:
        """XIDs with our prefix the server holds prepared (MySQL: server-wide; the
        ``txc_xa`` rows of this database tell which of them are ours)."""

    async def is_prepared(self, conn: AsyncConnection, xid: str) -> bool:
        return xid in await self.prepared(conn)

    @abstractmethod
    def gone(self, exc: sa_exc.DBAPIError) -> bool:
        """True when a commit/rollback failed because no such prepared XID exists."""

    def taken(self, exc: sa_exc.DBAPIError) -> bool:
        """True when :meth:`begin` failed because another session has the XID open or
        prepared (MySQL/MariaDB; PostgreSQL learns that only at ``PREPARE``)."""
        return False

    def busy(self, exc: sa_exc.DBAPIError) -> bool:
        """True when a commit/rollback failed because another session is finishing the
        same prepared XID at this moment (PostgreSQL)."""
        return False

    @abstractmethod
    async def check(self, conn: AsyncConnection) -> None:
        """Raise :class:`TwoPhaseUnavailable` if prepared transactions cannot work."""


class PostgresXa(XaDriver):
    async def begin(self, conn: AsyncConnection, xid: str, lock_timeout_s: float,
                    session_timeout_s: float) -> None:
        await guard_session(conn, session_timeout_s)
        await _simple(conn, f"BEGIN; SET LOCAL lock_timeout = {_ms(lock_timeout_s)}")

    async def prepare(self, conn: AsyncConnection, xid: str) -> None:
        await _simple(conn, f"PREPARE TRANSACTION {literal(xid)}")

    async def preparing_session(self, conn: AsyncConnection) -> int | None:
        return None  # PREPARE TRANSACTION already dissociates it from the session

    async def rollback_active(self, conn: AsyncConnection, xid: str) -> None:
        await _simple(conn, "ROLLBACK")

    async def release(self, conn: AsyncConnection) -> None:
        pass  # SET LOCAL: the settings ended with the transaction

    async def commit_prepared(self, conn: AsyncConnection, xid: str) -> None:
        await _simple(conn, f"COMMIT PREPARED {literal(xid)}")

    async def rollback_prepared(self, conn: AsyncConnection, xid: str) -> None:
        await _simple(conn, f"ROLLBACK PREPARED {literal(xid)}")

    async def prepared(self, conn: AsyncConnection) -> list[str]:
        stmt = text(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE :prefix"
        ).bindparams(prefix=XID_PREFIX + "%")
        return [gid for (gid,) in await conn.execute(stmt) if is_txc_xid(gid)]

    async def is_prepared(self, conn: AsyncConnection, xid: str) -> bool:
        stmt = text("SELECT 1 FROM pg_prepared_xacts WHERE gid = :xid AND database = current_database()")
        return (await conn.execute(stmt.bindparams(xid=xid))).first() is not None

    def gone(self, exc: sa_exc.DBAPIError) -> bool:
        return _sqlstate(exc) == "42704"  # prepared transaction with identifier ... does not exist

    def busy(self, exc: sa_exc.DBAPIError) -> bool:
        return _sqlstate(exc) == "55000"  # prepared transaction with identifier ... is busy

    async def check(self, conn: AsyncConnection) -> None:
        value = (await conn.execute(text("SHOW max_prepared_transactions"))).scalar_one()
        if int(value) <= 0:
            raise TwoPhaseUnavailable(
                f"PostgreSQL at {mask(conn.engine.url)} has max_prepared_transactions = 0, which "
                "disables PREPARE TRANSACTION: set max_prepared_transactions to at least the "
                "number of branches that may be prepared at once (e.g. "
                "ALTER SYSTEM SET max_prepared_transactions = 100) and restart the server"
            )


# MariaDB/MySQL: XAER_NOTA (unknown XID), and the XA_RB* family (the branch was rolled back).
_MYSQL_GONE = {1397, 1402, 1612, 1613, 1614}
_MYSQL_DUPID = 1440  # XAER_DUPID: XA START of an XID another session has open or prepared
_XA_SESSION = "txc_xa_session"  # key in a connection's info: the session settings begin() made


class MysqlXa(XaDriver):
    async def preparing_session(self, conn: AsyncConnection) -> int | None:
        driver_connection = (await conn.get_raw_connection()).driver_connection
        if driver_connection is None:
            raise RuntimeError("the prepared XA transaction's connection is already closed")
        return int(driver_connection.server_thread_id[0])  # no round trip

    async def begin(self, conn: AsyncConnection, xid: str, lock_timeout_s: float,
                    session_timeout_s: float) -> None:
        # The lock wait (whole seconds) is a session setting: made with the guard in one
        # statement, once for as long as the 2PC code keeps the connection (see _held),
        # and reset by release() before it goes back to the pool.
        seconds = max(1, math.ceil(lock_timeout_s))
        guard = guard_statement(conn, session_timeout_s)
        setting = f"{guard}, innodb_lock_wait_timeout = {seconds}"
        if conn.info.get(_XA_SESSION) != setting:
            await conn.exec_driver_sql(setting)
            mark_guarded(conn, guard)
            conn.info[_XA_SESSION] = setting
        # Works with autocommit off too, as long as no local transaction is open.
        await conn.exec_driver_sql(f"XA START {literal(xid)}")

    async def release(self, conn: AsyncConnection) -> None:
        if conn.info.pop(_XA_SESSION, None) is not None:
            await conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = DEFAULT")

    async def prepare(self, conn: AsyncConnection, xid: str) -> None:
        await conn.exec_driver_sql(f"XA END {literal(xid)}")
        await conn.exec_driver_sql(f"XA PREPARE {literal(xid)}")

    async def rollback_active(self, conn: AsyncConnection, xid: str) -> None:
        await conn.exec_driver_sql(f"XA END {literal(xid)}")
        await conn.exec_driver_sql(f"XA ROLLBACK {literal(xid)}")

    async def commit_prepared(self, conn: AsyncConnection, xid: str) -> None:
        await conn.exec_driver_sql(f"XA COMMIT {literal(xid)}")

    async def rollback_prepared(self, conn: AsyncConnection, xid: str) -> None:
        await conn.exec_driver_sql(f"XA ROLLBACK {literal(xid)}")

    async def prepared(self, conn: AsyncConnection) -> list[str]:
        found: list[str] = []
        # Columns: formatID, gtrid_length, bqual_length, data (gtrid + bqual).
        for row in await conn.exec_driver_sql("XA RECOVER"):
            format_id, _gtrid, bqual_length, data = tuple(row)
            xid = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
            if int(format_id) == 1 and int(bqual_length) == 0 and is_txc_xid(xid):
                found.append(xid)
        return found

    def gone(self, exc: sa_exc.DBAPIError) -> bool:
        args: tuple[object, ...] = getattr(exc.orig, "args", ())
        return bool(args) and args[0] in _MYSQL_GONE

    def taken(self, exc: sa_exc.DBAPIError) -> bool:
        args: tuple[object, ...] = getattr(exc.orig, "args", ())
        return bool(args) and args[0] == _MYSQL_DUPID

    async def check(self, conn: AsyncConnection) -> None:
        try:
            await conn.exec_driver_sql("XA RECOVER")
        except sa_exc.DBAPIError as exc:
            raise TwoPhaseUnavailable(
                f"{mask(conn.engine.url)} cannot list prepared XA transactions ({describe(exc)}): "
                "the SDK's recovery needs XA RECOVER (MySQL 8: the XA_RECOVER_ADMIN privilege)"
            ) from None


async def wait_session_gone(observer: AsyncConnection, session: int) -> None:
    """Return once the server has finished ending ``session`` (closed by the caller).

    MariaDB 10.11 can lose a commit that races with the end of the session that prepared
    the XID: XA COMMIT answers OK, the transaction stays prepared, holding its locks, and
    XA RECOVER no longer lists it (reproduced: 2 of 1,000 under 20 concurrent
    prepare/close/commit loops). So a yes vote waits for this. The caller's call_timeout
    bounds the wait.
    """
    pause = 0.002
    while await _session_exists(observer, session):
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)


async def _session_exists(conn: AsyncConnection, session: int) -> bool:
    found = await conn.execute(text("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                    "WHERE ID = :session").bindparams(session=session))
    return bool(found.scalar_one())


async def _simple(conn: AsyncConnection, sql: str) -> None:
    """Run parameterless ``sql`` on PostgreSQL in one round trip (asyncpg's simple query
    protocol, which also takes ``BEGIN; SET LOCAL ...`` as one message).

    Through SQLAlchemy every statement is prepared first: one more round trip for each
    XID-bearing statement, whose text is new every time, and each one evicts a cached
    statement of the barrier's. Only for statements on an AUTOCOMMIT connection, whose
    transactions the SDK opens and ends itself. Failures are raised as SQLAlchemy's
    ``DBAPIError`` with the driver's error as ``orig`` (its SQLSTATE), like any other.
    """
    import asyncpg  # type: ignore[import-untyped]  # PostgreSQL only: MySQL users need not have it

    raw = (await conn.get_raw_connection()).driver_connection
    if raw is None:
        raise RuntimeError("the connection is already closed")
    try:
        await raw.execute(sql)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        lost = isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresConnectionError)
        if lost:
            await conn.invalidate()
        raise sa_exc.DBAPIError(sql, None, exc, hide_parameters=True,
                                connection_invalidated=lost) from exc


def _sqlstate(exc: sa_exc.DBAPIError) -> object:
    return getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def xa_driver(conn: AsyncConnection) -> XaDriver:
    return MysqlXa() if is_mysql(conn) else PostgresXa()


async def check_two_phase(engine: AsyncEngine) -> None:
    """Check that ``engine``'s database can prepare transactions and has the ``txc_xa``
    table; :class:`TwoPhaseUnavailable` says what to change otherwise."""
    async with engine.connect() as conn:
        await xa_driver(conn).check(conn)
        try:
            await conn.execute(select(xa.c.xid).limit(1))
        except sa_exc.DBAPIError:
            raise TwoPhaseUnavailable(
                f"table {XA_TABLE} is missing in {mask(engine.url)}: run `txc migrate --dsn URL` "
                "(or coordinator.participant.upgrade(engine))"
            ) from None
