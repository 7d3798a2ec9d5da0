"""Two-phase commit branches on the service's own database, exactly once.

Per branch (gid, branch) there is one XID (:func:`xid_for`), one ``txc_xa`` row and, inside
the branch's local transaction, one witness row (the prepare barrier row). A branch costs
three local transactions: the row (with the vote) committed just before the ``PREPARE``,
the prepared transaction itself, and its ``COMMIT PREPARED`` / ``ROLLBACK PREPARED``.
docs/two_phase.md has the crash analysis: what the database holds when a process dies at
each point, and what the next call or the recovery loop does with it.

* **prepare** reads the row. None: open the local transaction (XA START / BEGIN), insert
  the witness first (the branch lock: a twin waits for it, or fails XA START at once),
  run the business function, then commit the row ``prepared`` with the result, then
  ``PREPARE`` and vote yes. A refusal rolls back and commits the row ``refused``; an
  abort that inserted the row first makes the prepare roll back and vote no (hanging).
  A row found: ``refused`` / ``aborted`` answer no again; ``prepared`` answers the stored
  vote when the XID is prepared or its witness shows it committed; otherwise the prepare
  that wrote it stopped before its ``PREPARE`` (no yes vote was ever sent): under the
  branch lock the row becomes ``refused`` and the answer is no.
* **commit** finishes the XID (no row read on the usual path); gone, its witness tells
  "committed earlier" (OK) from "rolled back / never prepared" (FAILED, a conflict).
  The row keeps ``prepared`` and the vote's result: a late duplicate prepare answers it.
* **abort** reads the row: none inserts it ``aborted`` (a null abort: a late prepare
  votes no); ``prepared`` rolls the XID back, then marks the row ``aborted``.
* calls never wait for each other, except a prepare for its twin's witness row, up to
  the lock timeout (the business function's own row locks wait as long). A prepare past
  ``max_concurrent_prepares`` answers RETRY at once: prepared transactions hold their
  locks until phase 2, and phase 2 needs pooled connections to release them. Commit and
  Abort, which are not bounded so, hold one pooled connection at a time.
* conflicting requests (commit of a rolled back branch, abort of a committed one) answer
  FAILED, so the coordinator shows the transaction FAILED for an operator.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool

from coordinator.participant._db.backoff import retrying_on
from coordinator.participant._db.errors import describe, is_lock_timeout, is_transient
from coordinator.participant._db.session import guard_session
from coordinator.participant._db.sql import age, is_mysql
from coordinator.participant._local import BarrierOptions, BusinessFn, Refused, as_result, refusal
from coordinator.participant._metrics import OFF, ParticipantMetrics
from coordinator.participant._types import BranchKey, Op, Outcome, Reply
from coordinator.participant.two_phase._sessions import (
    Busy,
    Decision,
    Finished,
    Probe,
    Sessions,
    StillAttached,
    discard,
)
from coordinator.participant.two_phase._table import (
    Found,
    XaState,
    claim,
    move,
    read,
    rows,
    server_now,
    witness_committed,
)
from coordinator.participant.two_phase._xa import xa_driver
from coordinator.participant.two_phase._xid import xid_for
from coordinator.rpc._tls import TlsFiles

log = logging.getLogger("coordinator.participant.two_phase")


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
    """How long a prepare may wait for a row lock (its business function's, or its twin's
    witness row) before the branch answers RETRY (the coordinator retries until its
    prepare deadline). Whole seconds on MySQL/MariaDB (rounded up)."""

    max_concurrent_prepares: int = 6
    """Prepares running at once; more answer RETRY at once. Each holds two pooled
    connections, so keep twice this well below the engine's pool size, leaving room for
    phase 2."""

    max_held_sessions: int | None = None
    """MySQL/MariaDB: sessions kept checked out of the pool by 2PC, at most
    ``session_timeout_s / 2`` each: prepared branches' preparing sessions, kept until phase
    2 finishes the XID on them (no wait for the preparing session to end, and no MariaDB
    lost-commit race), then kept as spares for the next branch (its session settings
    already made). Past this many, a prepare closes its connection and waits for its
    session to end before it votes, and the next branch opens a new connection: keep room
    for the branches that wait for phase 2 at once (rate x the coordinator's time from vote
    to commit). None (the default): half the engine's pool (``pool_size + max_overflow``),
    at least 6 (6 for a pool of no fixed size); 0 never keeps one. Count them in the pool
    size. (PostgreSQL lets go at PREPARE: not used.)"""

    def __post_init__(self) -> None:
        if min(self.recovery_interval_s, self.coordinator_timeout_s, self.lock_timeout_s) <= 0:
            raise ValueError("recovery_interval_s, coordinator_timeout_s and lock_timeout_s must "
                             "be positive")
        if self.max_concurrent_prepares < 1:
            raise ValueError("max_concurrent_prepares must be at least 1")
        if self.max_held_sessions is not None and self.max_held_sessions < 0:
            raise ValueError("max_held_sessions must not be negative")

    def held_sessions(self, engine: AsyncEngine) -> int:
        """:attr:`max_held_sessions`, or its default for ``engine``'s pool."""
        if self.max_held_sessions is not None:
            return self.max_held_sessions
        pool = engine.sync_engine.pool
        if not isinstance(pool, QueuePool):
            return _MIN_HELD
        overflow = max(0, getattr(pool, "_max_overflow", 0))  # -1: no bound; not public
        return max(_MIN_HELD, (pool.size() + overflow) // 2)


@dataclass(frozen=True)
class InDoubtBranch:
    """A branch prepared in the database whose outcome this service has not applied yet."""

    xid: str
    gid: str
    branch: str
    operation: str
    state: str  # the txc_xa state: "prepared" (or "preparing", written by older versions)
    age_s: float  # seconds since its prepare started (database clock)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, StillAttached) or is_transient(exc)


_MIN_HELD = 6
_BUSY = Reply(Outcome.RETRY, message="busy: another call for this branch is in progress")
UNFINISHED = ("prepare refused: an earlier attempt stopped before its PREPARE (no yes vote was "
              "sent); voting no")


@dataclass(frozen=True)
class _Vote:
    reply: Reply
    recorded: bool = False  # this call recorded a new yes vote
    prepared: bool = False  # the branch connection now holds the prepared XID


class TwoPhase:
    """Prepare / commit / abort of 2PC branches on one database (``AsyncEngine``)."""

    def __init__(self, engine: AsyncEngine, options: BarrierOptions | None = None,
                 two_phase: TwoPhaseOptions | None = None, *,
                 metrics: ParticipantMetrics = OFF) -> None:
        self._engine = engine
        # Its reports follow facts already durable (a committed row, a prepared XID), so
        # unlike the barrier's they are not held back until a commit.
        self._metrics = metrics
        self._options = options or BarrierOptions()
        self._limits = two_phase or TwoPhaseOptions()
        self._preparing = 0
        self._sessions = Sessions(engine, self._options, self._limits.lock_timeout_s,
                                  self._limits.held_sessions(engine))

    @property
    def sessions(self) -> Sessions:
        return self._sessions

    @contextlib.asynccontextmanager
    async def _control(self) -> AsyncIterator[AsyncConnection]:
        """The connection that reads and writes ``txc_xa`` rows, one statement at a time:
        autocommit on PostgreSQL (free with asyncpg); on MySQL/MariaDB a transaction that
        is committed after each write and at the end (there, switching a pooled connection
        to autocommit and back costs four round trips)."""
        async with self._engine.connect() as conn:
            if not is_mysql(conn):
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            await guard_session(conn, self._options.session_timeout_s)
            yield conn
            await conn.commit()

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
            vote = await self._vote(key, operation, business)
        finally:
            self._preparing -= 1
        if vote.recorded:  # counted once the vote is durable: a failed attempt is retried
            self._metrics.two_phase_prepared()
        return vote.reply

    async def _vote(self, key: BranchKey, operation: str, business: BusinessFn) -> _Vote:
        xid = xid_for(key.gid, key.branch)
        async with self._control() as control:
            found = await read(control, xid)
            if found is not None:
                return await self._vote_again(control, key, xid, found)
            return await self._vote_first(control, key, xid, operation, business)

    async def _vote_again(self, control: AsyncConnection, key: BranchKey, xid: str,
                          found: Found) -> _Vote:
        """A prepare that finds the branch's row: the vote it records, if it still stands."""
        if found.state not in (XaState.PREPARING, XaState.PREPARED):
            return _Vote(self._stored(found))
        if await xa_driver(control).is_prepared(control, xid):
            if found.state is XaState.PREPARING:
                # Written by an older version that died after PREPARE, before the vote.
                await self._sessions.wait_detached(control, xid)
                await move(control, xid, XaState.PREPARED)
                return _Vote(Reply(Outcome.OK, message="already prepared"), recorded=True)
            return _Vote(self._stored(found))
        if await witness_committed(control, key):
            return _Vote(self._stored(found))
        return _Vote(await self._vote_no(control, key, xid, found))

    def _stored(self, found: Found) -> Reply:
        """The answer a row stands for (duplicates get the first answer again)."""
        if found.state is XaState.ABORTED:
            self._metrics.hanging_refusal(Op.PREPARE)
            return Reply(Outcome.FAILED, message="prepare refused: its abort already ran; hanging request")
        self._metrics.duplicate(Op.PREPARE)
        if found.state is XaState.REFUSED:
            return Reply(Outcome.FAILED, message=found.message or "refused")
        return Reply(Outcome.OK, found.result, found.message)  # prepared (or since committed)

    async def _vote_no(self, control: AsyncConnection, key: BranchKey, xid: str,
                       found: Found) -> Reply:
        """The row says prepared, yet the XID is neither prepared nor committed: the prepare
        that wrote it stopped before its PREPARE (or an abort rolled it back and died before
        marking the row). No yes vote was sent for it, or phase 2 has decided abort: under
        the branch lock, vote no."""
        async with self._sessions.probe(key, xid) as probe:
            if probe is Probe.BUSY:
                return _BUSY
            if probe is Probe.COMMITTED:
                return self._stored(found)
            if await move(control, xid, XaState.REFUSED, UNFINISHED):
                await control.commit()
                return Reply(Outcome.FAILED, message=UNFINISHED)
        return self._stored(await self._latest(control, xid))  # another call moved it first

    async def _vote_first(self, control: AsyncConnection, key: BranchKey, xid: str,
                          operation: str, business: BusinessFn) -> _Vote:
        conn = await self._sessions.branch()
        try:
            vote = await self._run(conn, control, key, xid, operation, business)
        except BaseException as exc:
            # Whatever state the local transaction is in, closing the connection makes
            # the server roll it back.
            await discard(conn)
            if isinstance(exc, Busy):
                return _Vote(_BUSY)
            if isinstance(exc, Exception) and is_lock_timeout(exc):
                return _Vote(self._locked_out())
            raise
        if vote is not None and vote.prepared:
            await self._sessions.prepared(conn, xid, control)
            return vote
        await self._sessions.done(conn)
        if vote is None:  # another call wrote the row since: answer as a prepare that found it
            return await self._vote_again(control, key, xid, await self._latest(control, xid))
        return vote

    async def _run(self, conn: AsyncConnection, control: AsyncConnection, key: BranchKey,
                   xid: str, operation: str, business: BusinessFn) -> _Vote | None:
        """The branch's local transaction on ``conn``: witness, business, row, PREPARE.
        None when another call wrote the row meanwhile (an abort that came first, or the
        branch committed): this one rolled back."""
        driver = xa_driver(conn)
        try:
            await self._sessions.begin(conn, xid)
        except Exception as exc:
            if not (isinstance(exc, sa_exc.DBAPIError) and driver.taken(exc)):
                raise
            return _Vote(_BUSY)  # MySQL: a twin has the XID open, or prepared it since
        if not await self._sessions.witness(conn, key):
            await driver.rollback_active(conn, xid)  # committed since we read no row
            return None
        try:
            result = as_result(await business(conn), "a prepare handler")
        except Refused as exc:
            await driver.rollback_active(conn, xid)
            return await self._record_refusal(control, key, xid, operation, refusal(exc))
        if not await claim(control, xid, key, operation, XaState.PREPARED, result=result):
            await driver.rollback_active(conn, xid)  # an abort came first
            return None
        await control.commit()  # durable before PREPARE: recovery maps the XID back
        await driver.prepare(conn, xid)
        return _Vote(Reply(Outcome.OK, result), recorded=True, prepared=True)

    async def _record_refusal(self, control: AsyncConnection, key: BranchKey, xid: str,
                              operation: str, reply: Reply) -> _Vote | None:
        if await claim(control, xid, key, operation, XaState.REFUSED, message=reply.message):
            await control.commit()
            return _Vote(reply)
        return None  # an abort came first

    async def _latest(self, control: AsyncConnection, xid: str) -> Found:
        found = await read(control, xid, latest=True)
        await control.commit()  # MySQL: lets go of the shared lock the read took
        if found is None:  # pragma: no cover - only a purge run with a tiny age could do this
            raise RuntimeError(f"txc_xa row {xid} vanished while in use")
        return found

    def _locked_out(self) -> Reply:
        return Reply(Outcome.RETRY, message=f"rows locked by another transaction for "
                     f"{self._limits.lock_timeout_s:g}s (a prepared branch waiting for phase 2?)")

    # -- phase 2 -------------------------------------------------------------------------

    async def commit(self, key: BranchKey) -> Reply:
        """Finish the XID; only when it is gone does the row say why."""
        xid = xid_for(key.gid, key.branch)
        finished = await self._sessions.finish(key, xid, Decision.COMMIT)
        if finished is Finished.NOW:
            return Reply(Outcome.OK)
        if finished is Finished.COMMITTED:
            self._metrics.duplicate(Op.COMMIT)
            return Reply(Outcome.OK, message="already committed")
        async with self._control() as control:
            found = await read(control, xid)
        if found is None:
            return _conflict(key, "commit refused: this branch was never prepared here")
        state = found.state if found.state is XaState.REFUSED else XaState.ABORTED
        return _conflict(key, f"commit refused: this branch is {state} here")

    async def abort(self, key: BranchKey, operation: str) -> Reply:
        """Read the row; roll back a prepared XID, then mark the row. One connection at a
        time (phase 2 is not bounded like prepares: a call holding one connection while
        waiting for a second could leave none for the others)."""
        xid = xid_for(key.gid, key.branch)
        async with self._control() as control:
            found = await self._row_or_null_abort(control, key, xid, operation)
        if found is None:
            self._metrics.null_compensation(Op.ABORT)
            return Reply(Outcome.OK, message="null abort: never prepared; a late prepare votes no")
        if found.state is XaState.COMMITTED:
            return _conflict(key, "abort refused: this branch already committed")
        if found.state not in (XaState.PREPARING, XaState.PREPARED):
            return self._already_aborted(found)
        finished = await self._sessions.finish(key, xid, Decision.ABORT)
        if finished is Finished.COMMITTED:
            return _conflict(key, "abort refused: this branch already committed")
        if finished is Finished.NOW:
            return await self._mark_aborted(xid)
        # Not prepared: rolled back before, or a prepare is between its row and its PREPARE.
        async with self._probe(key, xid) as probe:
            if probe is Probe.BUSY:
                return _BUSY
            if probe is Probe.COMMITTED:
                return _conflict(key, "abort refused: this branch already committed")
            return await self._mark_aborted(xid)

    async def _row_or_null_abort(self, control: AsyncConnection, key: BranchKey, xid: str,
                                 operation: str) -> Found | None:
        """The branch's row; None when there was none and this abort inserted it."""
        found = await read(control, xid)
        if found is not None:
            return found
        if await claim(control, xid, key, operation, XaState.ABORTED):
            return None
        return await self._latest(control, xid)  # a prepare wrote it meanwhile

    def _already_aborted(self, found: Found) -> Reply:
        if found.state is XaState.REFUSED:
            return Reply(Outcome.OK, message="nothing to roll back: this branch voted no")
        self._metrics.duplicate(Op.ABORT)
        return Reply(Outcome.OK, message="already aborted")

    @contextlib.asynccontextmanager
    async def _probe(self, key: BranchKey, xid: str) -> AsyncIterator[Probe]:
        """The branch lock for a call that is not a prepare: it counts against
        ``max_concurrent_prepares`` (it holds a connection while it writes the row on
        another, as a prepare does), and past it the answer is busy."""
        if self._preparing >= self._limits.max_concurrent_prepares:
            yield Probe.BUSY
            return
        self._preparing += 1
        try:
            async with self._sessions.probe(key, xid) as probe:
                yield probe
        finally:
            self._preparing -= 1

    async def _mark_aborted(self, xid: str) -> Reply:
        async with self._control() as control:
            if await move(control, xid, XaState.ABORTED):
                return Reply(Outcome.OK)
            # Another call finished it first (a twin abort, or a duplicate prepare voting no).
            return self._already_aborted(await self._latest(control, xid))

    async def close(self) -> None:
        """Give back every kept session (the host calls this when it stops)."""
        await self._sessions.close()

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
        """Apply the coordinator's decision to an in-doubt branch; the state it ends in, or
        None when another session holds the XID (MySQL: the one that prepared it, kept by
        another process for its phase 2 or still ending; PostgreSQL: one finishing it right
        now): the next round tries again."""
        key = BranchKey(branch.gid, branch.branch, Op.COMMIT if decision is Decision.COMMIT else Op.ABORT)
        try:
            finished = await self._sessions.finish(key, branch.xid, decision)
        except StillAttached:
            return None
        if finished is Finished.COMMITTED or (finished is Finished.NOW and decision is Decision.COMMIT):
            return XaState.COMMITTED
        if finished is Finished.NOW:
            async with self._control() as control:
                await move(control, branch.xid, XaState.ABORTED)
        # Not prepared any more and not committed: a call rolled it back meanwhile.
        return XaState.ABORTED


def _conflict(key: BranchKey, message: str) -> Reply:
    log.warning("2PC gid=%s branch=%s: %s", key.gid, key.branch, message,
                extra={"gid": key.gid, "branch": key.branch, "op": key.op})
    return Reply(Outcome.FAILED, message=message)
