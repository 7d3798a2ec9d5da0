"""Two-phase commit branches on the service's own database, exactly once.

Per branch (gid, branch) there is one XID (:func:`xid_for`) and one ``txc_xa`` row. Every
call first locks that row, so twins and reordered calls for one branch run one at a time:

* **prepare** claims the row (committed on its own, so recovery can map the XID back even
  if this process dies right after ``XA PREPARE``), then locks it in a second transaction
  on the same connection, then by state: aborted ->
  vote no (the abort came first); refused/prepared/committed -> the same vote again;
  preparing -> if the XID is already prepared (an earlier attempt died before recording
  its vote) vote yes, else run the business function in a fresh local transaction on an
  autocommit connection, write the branch's barrier row in it, and prepare it. On
  MySQL/MariaDB that connection is kept for phase 2 (``_held``), which then finishes the
  XID on the session that prepared it.
* **commit** / **abort** lock the row and finish the prepared XID. An XID that is gone is
  told apart by the barrier row written inside it: visible = it committed, absent = it
  rolled back or never prepared. An abort with no row leaves one (state aborted), so a
  late prepare votes no; a commit with no row is refused (never prepared here).
* calls never queue: a call that finds its branch's row locked by a twin answers RETRY
  at once, as does a prepare past ``max_concurrent_prepares`` or one whose business
  function waited ``lock_timeout`` for a row lock. Prepared transactions hold their locks
  until phase 2, and phase 2 needs pooled connections to release them: prepares that
  queued for locks or connections could take them all and never be released.
* conflicting requests (commit of a rolled back branch, abort of a committed one) answer
  FAILED, so the coordinator shows the transaction FAILED for an operator.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator._tls import TlsFiles
from coordinator.participant._barrier import BarrierOptions, BusinessFn, as_result, refusal
from coordinator.participant._db.backoff import retrying_on
from coordinator.participant._db.errors import Refused, describe, is_lock_timeout, is_transient
from coordinator.participant._db.session import guard_session
from coordinator.participant._db.sql import age
from coordinator.participant._metrics import OFF, ParticipantMetrics
from coordinator.participant._types import BranchKey, Op, Outcome, Reply
from coordinator.participant.two_phase._held import Held, HeldSessions
from coordinator.participant.two_phase._table import (
    Locked,
    XaState,
    claim,
    exists,
    lock,
    rows,
    server_now,
    set_state,
    witness_committed,
    write_witness,
)
from coordinator.participant.two_phase._xa import wait_session_gone, xa_driver
from coordinator.participant.two_phase._xid import xid_for

log = logging.getLogger("coordinator.participant.two_phase")


class Decision(StrEnum):
    COMMIT = "commit"
    ABORT = "abort"


@dataclass(frozen=True)
class TwoPhaseOptions:
    """Limits of 2PC branches and the in-doubt resolver's coordinator. (The session guard
    of these transactions is :attr:`BarrierOptions.session_timeout_s`.)"""

    coordinator: str | None = None
    """"host:port" the in-doubt resolver asks for decisions. None: no resolver loop;
    in-doubt branches then wait for the coordinator's own phase-2 retries."""

    recovery_interval_s: float = 30.0
    """Time between the resolver's rounds (the first runs at start-up)."""

    coordinator_timeout_s: float = 5.0
    """Deadline of one question to the coordinator."""

    coordinator_tls_ca: bytes | None = None
    """PEM CAs to check a coordinator that serves TLS; None: plaintext."""

    coordinator_tls_identity: TlsFiles | None = None
    """Client certificate presented to a coordinator that requires one (mutual TLS)."""


    lock_timeout_s: float = 2.0
    """How long a prepare's business function may wait for a row lock before the branch
    answers RETRY (the coordinator retries until its prepare deadline). Whole seconds on
    MySQL/MariaDB (rounded up)."""

    max_concurrent_prepares: int = 6
    """Prepares running at once; more answer RETRY at once. Each holds two pooled
    connections, so keep twice this well below the engine's pool size, leaving room for
    phase 2."""

    max_held_sessions: int = 6
    """MySQL/MariaDB: prepared branches whose preparing connection is kept, checked out of
    the pool, until phase 2 finishes the XID on it (at most ``session_timeout_s / 2``).
    That removes the wait for the preparing session to end, and MariaDB's lost-commit race
    with it. Past this many, a prepare closes its connection and waits as before; 0 never
    keeps one. Count them in the pool size. (PostgreSQL lets go at PREPARE: not used.)"""

    def __post_init__(self) -> None:
        if min(self.recovery_interval_s, self.coordinator_timeout_s, self.lock_timeout_s) <= 0:
            raise ValueError("recovery_interval_s, coordinator_timeout_s and lock_timeout_s must "
                             "be positive")
        if self.max_concurrent_prepares < 1:
            raise ValueError("max_concurrent_prepares must be at least 1")
        if self.max_held_sessions < 0:
            raise ValueError("max_held_sessions must not be negative")


@dataclass(frozen=True)
class InDoubtBranch:
    """A branch prepared in the database whose outcome this service has not applied yet."""

    xid: str
    gid: str
    branch: str
    operation: str
    state: str  # the txc_xa state: "prepared", or "preparing" if the vote was never recorded
    age_s: float  # seconds since its prepare started (database clock)


class StillAttached(Exception):
    """MySQL/MariaDB: the XID is prepared but its connection has not let go of it yet."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, StillAttached) or is_transient(exc)


class TwoPhase:
    """Prepare / commit / abort of 2PC branches on one database (``AsyncEngine``)."""

    def __init__(self, engine: AsyncEngine, options: BarrierOptions | None = None,
                 two_phase: TwoPhaseOptions | None = None, *,
                 metrics: ParticipantMetrics = OFF) -> None:
        self._engine = engine
        # Its reports follow facts already durable (a committed claim or state, a prepared
        # XID), so unlike the barrier's they are not held back until a commit.
        self._metrics = metrics
        self._options = options or BarrierOptions()
        self._limits = two_phase or TwoPhaseOptions()
        self._preparing = 0
        self._detaching: dict[str, int] = {}  # xid -> the session that prepared it, still ending
        self._held = HeldSessions(self._limits.max_held_sessions, self._options.session_timeout_s / 2,
                                  self._release)

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[AsyncConnection]:
        """A transaction the server ends by itself if this process goes quiet in it (a lost
        connection can leave the session open, holding its row locks, for hours)."""
        async with self._engine.connect() as conn:
            await guard_session(conn, self._options.session_timeout_s)
            async with conn.begin():
                yield conn

    async def call(self, key: BranchKey, operation: str, business: BusinessFn | None) -> Reply:
        """Answer a Prepare (``business`` required), Commit or Abort for ``key.op``.

        Transient database errors are retried a few times, then answered RETRY; other
        exceptions propagate (after rolling everything back), as with :class:`Barrier`.
        """
        opts = self._options
        retrying = retrying_on(_retryable, opts.attempts, opts.initial_backoff_s, opts.max_backoff_s)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(key, operation, business)
        except StillAttached as exc:
            return Reply(Outcome.RETRY, message=str(exc))
        except Exception as exc:
            if not is_transient(exc):
                raise
            return Reply(Outcome.RETRY, message=f"transient database error: {describe(exc)}")
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    async def _once(self, key: BranchKey, operation: str, business: BusinessFn | None) -> Reply:
        if key.op is Op.PREPARE:
            if business is None:
                raise ValueError("prepare needs a business function")
            return await self.prepare(key, operation, business)
        if key.op is Op.COMMIT:
            return await self.commit(key)
        if key.op is Op.ABORT:
            return await self.abort(key, operation)
        raise ValueError(f"{key.op} is not a two-phase operation")

    # -- phase 1 -------------------------------------------------------------------------

    async def prepare(self, key: BranchKey, operation: str, business: BusinessFn) -> Reply:
        limit = self._limits.max_concurrent_prepares
        if self._preparing >= limit:
            return Reply(Outcome.RETRY, message=f"busy: {limit} prepares in flight here")
        self._preparing += 1
        try:
            return await self._prepare(key, operation, business)
        finally:
            self._preparing -= 1

    @contextlib.asynccontextmanager
    async def _claimed(self, xid: str, key: BranchKey, operation: str,
                       state: XaState) -> AsyncIterator[tuple[AsyncConnection, bool]]:
        """Claim the branch's row (committed on its own: recovery must be able to map the
        XID back before anything is prepared), then open the control transaction on the
        same connection; yields it and whether the claim inserted the row."""
        async with self._engine.connect() as conn:
            await guard_session(conn, self._options.session_timeout_s)
            async with conn.begin():
                fresh = await claim(conn, xid, key, operation, state)
            async with conn.begin():
                yield conn, fresh

    async def _prepare(self, key: BranchKey, operation: str, business: BusinessFn) -> Reply:
        reply, recorded = await self._vote(key, operation, business)
        if recorded:  # counted once the vote is committed: a failed commit is retried
            self._metrics.two_phase_prepared()
        return reply

    async def _vote(self, key: BranchKey, operation: str,
                    business: BusinessFn) -> tuple[Reply, bool]:
        """The vote, and whether this call recorded a new PREPARED one."""
        xid = xid_for(key.gid, key.branch)
        async with self._claimed(xid, key, operation, XaState.PREPARING) as (control, fresh):
            row = await lock(control, xid)
            if row is None:
                return await _busy_or_gone(control, xid), False
            if row.state is not XaState.PREPARING:
                return self._vote_again(row), False
            # Only an attempt that found the row already claimed can follow one that died
            # after preparing; a fresh claim saves listing the server's prepared XIDs.
            if not fresh and xid in await xa_driver(control).prepared(control):
                # An earlier attempt prepared it and died before recording the vote.
                await self._wait_detached(control, xid)
                await set_state(control, xid, XaState.PREPARED)
                return Reply(Outcome.OK, message="already prepared"), True
            reply = await self._prepare_locally(key, xid, business, control)
            if reply.outcome is Outcome.RETRY:
                return reply, False
            state = XaState.PREPARED if reply.outcome is Outcome.OK else XaState.REFUSED
            await set_state(control, xid, state, reply.message, reply.result)
            return reply, state is XaState.PREPARED

    def _vote_again(self, row: Locked) -> Reply:
        if row.state is XaState.ABORTED:
            self._metrics.hanging_refusal(Op.PREPARE)
            return Reply(Outcome.FAILED, message="prepare refused: its abort already ran; hanging request")
        self._metrics.duplicate(Op.PREPARE)
        if row.state is XaState.REFUSED:
            return Reply(Outcome.FAILED, message=row.message or "refused")
        return Reply(Outcome.OK, row.result, row.message)  # prepared (or since committed)

    async def _prepare_locally(self, key: BranchKey, xid: str, business: BusinessFn,
                               control: AsyncConnection) -> Reply:
        conn = await self._engine.connect()
        kept = False
        try:
            reply, kept = await self._prepare_on(conn, key, xid, business, control)
            return reply
        finally:
            if not kept:
                await conn.close()

    async def _prepare_on(self, conn: AsyncConnection, key: BranchKey, xid: str, business: BusinessFn,
                          control: AsyncConnection) -> tuple[Reply, bool]:
        """The local transaction on ``conn``; the reply, and whether ``conn`` is now kept
        for phase 2."""
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        driver = xa_driver(conn)
        try:
            await driver.begin(conn, xid, self._limits.lock_timeout_s, self._options.session_timeout_s)
            try:
                result = as_result(await business(conn), "a prepare handler")
            except Refused as exc:
                await driver.rollback_active(conn, xid)
                return refusal(exc), False
            await write_witness(conn, key)
            await driver.prepare(conn, xid)
        except BaseException as exc:
            # Whatever state the local transaction is in, closing the connection makes
            # the server roll it back; never hand a half-done XA session to the pool.
            await _discard(conn)
            if isinstance(exc, Exception) and is_lock_timeout(exc):
                return self._locked_out(), False
            raise
        session = await driver.preparing_session(conn)
        if session is not None:
            if self._held.has_room():
                # Phase 2 finishes the XID on this very session: none ends in between.
                self._held.keep(xid, conn, session)
                return Reply(Outcome.OK, result), True
            self._detaching[xid] = session
            await _discard(conn)
            await self._wait_detached(control, xid)
        return Reply(Outcome.OK, result), False

    def _locked_out(self) -> Reply:
        return Reply(Outcome.RETRY, message=f"rows locked by another transaction for "
                     f"{self._limits.lock_timeout_s:g}s (a prepared branch waiting for phase 2?)")

    async def _wait_detached(self, observer: AsyncConnection, xid: str) -> None:
        """A yes vote waits until the session that prepared ``xid`` has ended (MySQL/MariaDB;
        see :func:`wait_session_gone`). An attempt cut short while waiting leaves the session
        here, so the retry's "already prepared" vote waits for it too."""
        session = self._detaching.get(xid)
        if session is not None:
            await wait_session_gone(observer, session)
            self._detaching.pop(xid, None)

    # -- phase 2 -------------------------------------------------------------------------

    async def commit(self, key: BranchKey) -> Reply:
        xid = xid_for(key.gid, key.branch)
        async with self._guarded() as control:
            row = await lock(control, xid)
            if row is None:
                if await exists(control, xid):
                    return _BUSY
                return _conflict(key, "commit refused: this branch was never prepared here")
            if row.state is XaState.COMMITTED:
                self._metrics.duplicate(Op.COMMIT)
                return Reply(Outcome.OK, message="already committed")
            if row.state in (XaState.ABORTED, XaState.REFUSED):
                return _conflict(key, f"commit refused: this branch is {row.state} here")
            return await self._finish(control, key, xid, Decision.COMMIT)

    async def abort(self, key: BranchKey, operation: str) -> Reply:
        xid = xid_for(key.gid, key.branch)
        async with self._claimed(xid, key, operation, XaState.ABORTED) as (control, fresh):
            if fresh:
                self._metrics.null_compensation(Op.ABORT)
                return Reply(Outcome.OK, message="null abort: never prepared; a late prepare votes no")
            row = await lock(control, xid)
            if row is None:
                return await _busy_or_gone(control, xid)
            if row.state is XaState.ABORTED:
                self._metrics.duplicate(Op.ABORT)
                return Reply(Outcome.OK, message="already aborted")
            if row.state is XaState.REFUSED:
                return Reply(Outcome.OK, message="nothing to roll back: this branch voted no")
            if row.state is XaState.COMMITTED:
                return _conflict(key, "abort refused: this branch already committed")
            return await self._finish(control, key, xid, Decision.ABORT)

    async def _finish(self, control: AsyncConnection, key: BranchKey, xid: str, decision: Decision) -> Reply:
        outcome = await self._apply(key, xid, decision)
        await set_state(control, xid, outcome)
        if (outcome is XaState.COMMITTED) != (decision is Decision.COMMIT):
            return _conflict(key, f"{decision} impossible: the branch is already {outcome} here")
        return Reply(Outcome.OK)

    async def _apply(self, key: BranchKey, xid: str, decision: Decision) -> XaState:
        """Commit or roll back the prepared XID; the state the branch ends in."""
        held = self._held.take(xid)
        if held is not None:
            outcome = await self._apply_held(held, xid, decision)
            if outcome is not None:
                return outcome
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            # A preparing session given back (expired, host stop) or lost must be gone
            # before another session finishes its XID: that race is the lost commit.
            await self._wait_detached(conn, xid)
            driver = xa_driver(conn)
            try:
                if decision is Decision.COMMIT:
                    await driver.commit_prepared(conn, xid)
                    return XaState.COMMITTED
                await driver.rollback_prepared(conn, xid)
                return XaState.ABORTED
            except sa_exc.DBAPIError as exc:
                if not driver.gone(exc):
                    raise
            # No such prepared XID. Still listed: the connection that prepared it has not
            # let go yet (MySQL), so try again; otherwise its barrier row tells the outcome.
            if xid in await driver.prepared(conn):
                raise StillAttached(f"{xid} is still attached to the connection that prepared it")
            return XaState.COMMITTED if await witness_committed(conn, key) else XaState.ABORTED

    async def _apply_held(self, held: Held, xid: str, decision: Decision) -> XaState | None:
        """Finish ``xid`` on the session that prepared it; None if that session failed (then
        the XID is finished from another one, once this session is gone)."""
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
            await _discard(held.conn)
            if not isinstance(exc, Exception):
                raise
            log.info("2PC: the session that prepared %s failed in phase 2 (%s); finishing it from "
                     "another session", xid, describe(exc))
            return None
        await _recycle(held.conn)
        return XaState.COMMITTED if decision is Decision.COMMIT else XaState.ABORTED

    async def _release(self, xid: str, held: Held) -> None:
        """Give a kept preparing session back: close it and wait until the server has ended
        it, so that another session may finish the XID without racing its end."""
        self._detaching[xid] = held.session  # before any await: phase 2 now waits for it
        await _discard(held.conn)
        async with self._engine.connect() as observer:
            await observer.execution_options(isolation_level="AUTOCOMMIT")
            await self._wait_detached(observer, xid)

    async def close(self) -> None:
        """Give back every kept preparing session (the host calls this when it stops)."""
        await self._held.release_all()

    # -- recovery ------------------------------------------------------------------------

    async def in_doubt(self) -> list[InDoubtBranch]:
        """Branches of this database that are prepared and wait for phase 2."""
        async with self._engine.connect() as conn:
            found = await rows(conn, await xa_driver(conn).prepared(conn))
            now = await server_now(conn)
        return [
            InDoubtBranch(r.xid, r.gid, r.branch, r.operation, r.state.value, age(now, r.created_at))
            for r in sorted(found, key=lambda r: r.created_at)
        ]

    async def resolve(self, branch: InDoubtBranch, decision: Decision) -> XaState | None:
        """Apply the coordinator's decision to an in-doubt branch; None when a call for the
        branch holds its row right now (that call finishes it, or the next round does), or
        when the session that prepared it is still attached (MySQL: another process keeps it
        for its phase 2, or it is still ending)."""
        key = BranchKey(branch.gid, branch.branch, Op.COMMIT if decision is Decision.COMMIT else Op.ABORT)
        async with self._guarded() as control:
            if await lock(control, branch.xid) is None:
                return None
            try:
                outcome = await self._apply(key, branch.xid, decision)
            except StillAttached:
                return None
            await set_state(control, branch.xid, outcome)
            return outcome


_BUSY = Reply(Outcome.RETRY, message="busy: another call for this branch is in progress")


async def _busy_or_gone(control: AsyncConnection, xid: str) -> Reply:
    """The row claimed a moment ago could not be locked: a twin holds it (the usual case),
    or a purge running with a tiny age removed it."""
    if await exists(control, xid):
        return _BUSY
    raise RuntimeError(f"txc_xa row {xid} vanished while in use")


def _conflict(key: BranchKey, message: str) -> Reply:
    log.warning("2PC gid=%s branch=%s: %s", key.gid, key.branch, message,
                extra={"gid": key.gid, "branch": key.branch, "op": key.op})
    return Reply(Outcome.FAILED, message=message)


async def _discard(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()


async def _recycle(conn: AsyncConnection) -> None:
    """Hand a kept session back to the pool once its XID is finished, with the server's
    default lock wait again (the prepare shortened it)."""
    try:
        await conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = DEFAULT")
    except Exception:
        await _discard(conn)
        return
    await conn.close()
