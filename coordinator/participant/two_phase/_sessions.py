"""The connections of 2PC branches: the one a branch's local transaction runs on, phase 2,
and the branch lock.

* :meth:`Sessions.branch` hands out a connection for a branch's local transaction
  (PostgreSQL: autocommit, the SDK opens the transaction itself; MySQL/MariaDB: a spare
  session kept from an earlier branch when there is one, see ``_held``).
* :meth:`Sessions.prepared` takes it back after ``PREPARE`` (MySQL: kept for phase 2 when
  there is room, else closed and waited out), :meth:`Sessions.done` when no XID is left on it.
* :meth:`Sessions.finish` commits or rolls back a prepared XID and says how it found it.
* :meth:`Sessions.probe` takes the branch lock: the XID opened (MySQL ``XA START``, which
  fails at once while another session has it open or prepared) and the witness row inserted
  (PostgreSQL: waits up to the lock timeout while another local transaction of the branch
  holds it). Holding it, nothing can prepare the branch; it also tells whether the branch
  has committed since.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from enum import Enum, StrEnum

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator.participant._db.errors import describe, is_lock_timeout
from coordinator.participant._db.sql import is_mysql
from coordinator.participant._local import BarrierOptions
from coordinator.participant._types import BranchKey
from coordinator.participant.two_phase._held import Held, HeldSessions
from coordinator.participant.two_phase._table import witness_committed, write_witness
from coordinator.participant.two_phase._xa import wait_session_gone, xa_driver

log = logging.getLogger("coordinator.participant.two_phase")


class Decision(StrEnum):
    COMMIT = "commit"
    ABORT = "abort"


class Finished(Enum):
    """How phase 2 found a branch's XID."""

    NOW = "finished now"  # it was prepared, and this call committed / rolled it back
    COMMITTED = "committed before"  # gone, and its witness row shows it committed
    NOT_PREPARED = "not prepared"  # gone without a witness: rolled back, or never prepared


class Probe(Enum):
    """What the branch lock found."""

    FREE = "free"  # taken: no local transaction of the branch is open, prepared or committed
    BUSY = "busy"  # another local transaction of the branch is open or prepared
    COMMITTED = "committed"  # the branch has committed


class StillAttached(Exception):
    """Another session holds the prepared XID: MySQL/MariaDB, the one that prepared it has
    not let go of it yet; PostgreSQL, one is committing or rolling it back right now."""


class Busy(Exception):
    """The branch's witness row is locked by another of its local transactions."""


class Sessions:
    def __init__(self, engine: AsyncEngine, options: BarrierOptions, lock_timeout_s: float,
                 max_held: int) -> None:
        self._engine = engine
        self._options = options
        self._lock_timeout_s = lock_timeout_s
        self._detaching: dict[str, int] = {}  # xid -> the session that prepared it, still ending
        self._held = HeldSessions(max_held, options.session_timeout_s / 2, self._release,
                                  self._give_back)

    @property
    def held(self) -> HeldSessions:
        return self._held

    # -- the branch's local transaction ---------------------------------------------------

    async def branch(self) -> AsyncConnection:
        """A connection to open a branch's local transaction on (:meth:`begin`)."""
        spare = self._held.borrow()
        if spare is not None:
            return spare.conn
        conn = await self._engine.connect()
        if not is_mysql(conn):
            # asyncpg: no round trip; the SDK sends BEGIN / PREPARE TRANSACTION itself.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn

    async def begin(self, conn: AsyncConnection, xid: str) -> None:
        await xa_driver(conn).begin(conn, xid, self._lock_timeout_s, self._options.session_timeout_s)

    async def witness(self, conn: AsyncConnection, key: BranchKey) -> bool:
        """Insert the witness row (see ``write_witness``); :class:`Busy` when another local
        transaction of the branch kept it locked past the lock timeout."""
        try:
            return await write_witness(conn, key)
        except sa_exc.DBAPIError as exc:
            if is_lock_timeout(exc):
                raise Busy from exc
            raise

    async def prepared(self, conn: AsyncConnection, xid: str, observer: AsyncConnection) -> None:
        """``conn`` just prepared ``xid``: keep it for phase 2 (MySQL), or let it go. Past
        the bound of kept sessions, return once its session has ended (``observer`` looks),
        so that another session may finish the XID without racing that end."""
        session = await xa_driver(conn).preparing_session(conn)
        if session is None:
            await conn.close()  # PostgreSQL: PREPARE TRANSACTION already let go of the XID
            return
        if self._held.has_room():
            self._held.keep(xid, conn, session)  # phase 2 finishes the XID on this session
            return
        self._detaching[xid] = session
        await discard(conn)
        await self.wait_detached(observer, xid)

    async def done(self, conn: AsyncConnection) -> None:
        """No XID is open on ``conn`` any more: keep it for the next branch (MySQL), or give
        it back to the pool."""
        session = await xa_driver(conn).preparing_session(conn)
        if session is None or not self._held.park(conn, session):
            await self._give_back(conn)

    async def _give_back(self, conn: AsyncConnection) -> None:
        try:
            await xa_driver(conn).release(conn)
        except Exception:
            await discard(conn)
            return
        await conn.close()

    async def wait_detached(self, observer: AsyncConnection, xid: str) -> None:
        """Return once the session that prepared ``xid`` here, if it is ending, has ended
        (MySQL/MariaDB; see :func:`wait_session_gone`). A call cut short while waiting
        leaves the session recorded, so the next call for the XID waits for it too."""
        session = self._detaching.get(xid)
        if session is not None:
            await wait_session_gone(observer, session)
            self._detaching.pop(xid, None)

    # -- the branch lock ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def probe(self, key: BranchKey, xid: str) -> AsyncIterator[Probe]:
        """Take the branch lock for the block (see the module's docstring); what it found."""
        conn = await self.branch()
        found = await self._lock(conn, key, xid)
        if found is Probe.BUSY:
            yield found
            return
        try:
            yield found
            await xa_driver(conn).rollback_active(conn, xid)
        except BaseException:
            await discard(conn)
            raise
        await self.done(conn)

    async def _lock(self, conn: AsyncConnection, key: BranchKey, xid: str) -> Probe:
        """Open ``xid`` on ``conn`` and insert its witness; BUSY (``conn`` given up) if
        another local transaction of the branch has either."""
        driver = xa_driver(conn)
        try:
            await self.begin(conn, xid)
        except sa_exc.DBAPIError as exc:
            if not driver.taken(exc):
                await discard(conn)
                raise
            await self.done(conn)
            return Probe.BUSY
        try:
            return Probe.FREE if await self.witness(conn, key) else Probe.COMMITTED
        except BaseException as exc:
            await discard(conn)
            if isinstance(exc, Busy):
                return Probe.BUSY
            raise

    # -- phase 2 --------------------------------------------------------------------------

    async def finish(self, key: BranchKey, xid: str, decision: Decision) -> Finished:
        """Commit or roll back the prepared ``xid``: on the session that prepared it when
        it is kept here, else from another one once that session is gone."""
        held = self._held.take(xid)
        if held is not None and await self._finish_held(held, xid, decision):
            return Finished.NOW
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            # A preparing session given back (expired, host stop) or lost must be gone
            # before another session finishes its XID: that race is the lost commit.
            await self.wait_detached(conn, xid)
            driver = xa_driver(conn)
            try:
                if decision is Decision.COMMIT:
                    await driver.commit_prepared(conn, xid)
                else:
                    await driver.rollback_prepared(conn, xid)
                return Finished.NOW
            except sa_exc.DBAPIError as exc:
                if driver.busy(exc):  # a twin or the recovery loop: try again
                    raise StillAttached(f"busy: another session is finishing {xid}") from exc
                if not driver.gone(exc):
                    raise
            # No such prepared XID. Still listed: the connection that prepared it has not
            # let go yet (MySQL), so try again; otherwise its witness tells the outcome.
            if await driver.is_prepared(conn, xid):
                raise StillAttached(f"busy: {xid} is still attached to the session that prepared it")
            return Finished.COMMITTED if await witness_committed(conn, key) else Finished.NOT_PREPARED

    async def _finish_held(self, held: Held, xid: str, decision: Decision) -> bool:
        """Finish ``xid`` on the session that prepared it; False if that session failed
        (then the XID is finished from another one, once this session is gone)."""
        driver = xa_driver(held.conn)
        try:
            if decision is Decision.COMMIT:
                await driver.commit_prepared(held.conn, xid)
            else:
                await driver.rollback_prepared(held.conn, xid)
        except BaseException as exc:
            # Committed or not, the outcome is read later from another session (the XID, or
            # the witness row if it is gone), after this one has ended.
            self._detaching[xid] = held.session
            await discard(held.conn)
            if not isinstance(exc, Exception):
                raise
            log.info("2PC: the session that prepared %s failed in phase 2 (%s); finishing it from "
                     "another session", xid, describe(exc))
            return False
        await self.done(held.conn)  # the next branch may use it
        return True

    async def _release(self, xid: str, held: Held) -> None:
        """Give a kept preparing session back: close it and wait until the server has ended
        it, so that another session may finish the XID without racing its end."""
        self._detaching[xid] = held.session  # before any await: phase 2 now waits for it
        await discard(held.conn)
        async with self._engine.connect() as observer:
            await observer.execution_options(isolation_level="AUTOCOMMIT")
            await self.wait_detached(observer, xid)

    async def close(self) -> None:
        """Give back every kept session (the host calls this when it stops)."""
        await self._held.release_all()


async def discard(conn: AsyncConnection) -> None:
    """Close ``conn`` and its session: whatever state a local transaction on it is in, the
    server rolls it back (never hand a half-done XA session to the pool)."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
