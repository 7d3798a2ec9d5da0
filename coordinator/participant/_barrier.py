"""The branch barrier: exactly-once branch calls on top of one unique row per (gid, branch, op).

Rules (after DTM's client/dtmcli/barrier.go, plus stored replies):

* forward ops (execute, prepare, commit) insert their own row first, holding the reply
  "OK, no result". Inserted: run the business function in the same transaction; only a
  result (or another reply) is then written into the row. Already
  there: a duplicate gets the stored reply again; a row an undo put there (reason
  "null-compensation"/"rollback") means the forward call arrived after its undo
  (hanging): refused with FAILED, nothing runs.
* undo ops (compensate, abort) insert their own row, then their forward op's row. If the
  forward row was new, the forward op never ran: a null compensation, nothing to undo,
  and the row now blocks the late forward call. If the forward row holds a FAILED reply
  (a refused action, whose writes were rolled back), there is nothing to undo either.
  Own row first keeps one lock order (undo row, then forward row), so twin undos cannot
  deadlock on MySQL's gap locks.
* a refusal (:class:`Refused`) of execute/prepare rolls the transaction back, then
  inserts the barrier row with the FAILED reply in a second one: a retry gets the same
  FAILED and a later compensate knows there is nothing to undo. (A twin or an undo that
  got the row in between wins: its row is the answer, as for any duplicate.) A refused undo or
  commit rolls back entirely, so the coordinator's retry or an operator's replay runs
  it again: those must succeed eventually.
* transient database errors (deadlock, serialization failure, lost connection) roll the
  whole transaction back and are retried here a few times, then answered RETRY.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator.participant._db.backoff import retrying_on
from coordinator.participant._db.barrier_sql import barrier_sql
from coordinator.participant._db.errors import describe, is_transient
from coordinator.participant._db.session import guard_session
from coordinator.participant._local import BarrierOptions, BusinessFn, Refused, as_result, refusal
from coordinator.participant._metrics import OFF, ParticipantMetrics
from coordinator.participant._types import BranchKey, Op, Outcome, Reply, forward_of

# Reason written on the forward op's row when an undo inserts it first.
UNDO_REASON = {Op.COMPENSATE: "null-compensation", Op.ABORT: "rollback"}
# Ops whose refusal is an answer worth keeping (a vote / a failed action).
_RECORDED_REFUSALS = frozenset({Op.EXECUTE, Op.PREPARE})


@dataclass(frozen=True)
class _Row:
    reason: str
    outcome: int | None
    result: bytes | None
    message: str | None

    def reply(self) -> Reply:
        outcome = Outcome(self.outcome) if self.outcome is not None else Outcome.OK
        return Reply(outcome, self.result or b"", self.message or "")


class _Rollback(Exception):  # control flow only, never escapes this module
    """Roll the barrier transaction back, then answer ``reply`` (and record it, for a
    refused forward op)."""

    def __init__(self, reply: Reply, record: bool = False) -> None:
        super().__init__(reply.message)
        self.reply = reply
        self.record = record


class Barrier:
    """Runs branch calls exactly once against one database (``AsyncEngine``)."""

    def __init__(self, engine: AsyncEngine, options: BarrierOptions | None = None, *,
                 metrics: ParticipantMetrics = OFF) -> None:
        self._engine = engine
        self._options = options or BarrierOptions()
        self._metrics = metrics

    async def call(self, key: BranchKey, fn: BusinessFn) -> Reply:
        """Run ``fn`` for ``key`` at most once; answer the reply of the run that counted.

        Exceptions other than :class:`Refused` and transient database errors propagate
        (after a rollback): they are bugs, and the caller decides what to answer.
        """
        opts = self._options
        retrying = retrying_on(is_transient, opts.attempts, opts.initial_backoff_s, opts.max_backoff_s)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(key, fn)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return Reply(Outcome.RETRY, message=f"transient database error: {describe(exc)}")
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    async def _once(self, key: BranchKey, fn: BusinessFn) -> Reply:
        found = _UntilCommit(self._metrics)
        try:
            async with self._transaction() as conn:
                forward = forward_of(key.op)
                if forward is None:
                    reply = await _forward(conn, key, fn, found)
                else:
                    reply = await _undo(conn, key, forward, fn, found)
        except _Rollback as rollback:
            if not rollback.record:
                return rollback.reply
            refused = rollback.reply
        else:
            found.report()
            return reply
        return await self._record_refusal(key, refused)

    async def _record_refusal(self, key: BranchKey, reply: Reply) -> Reply:
        """Keep a refused forward op's FAILED reply, in a transaction of its own: its
        business writes were rolled back with the first one (cheaper on the common path than
        a savepoint around every handler). A twin or an undo may have written the row in
        between; then that row is the answer, as for any call that finds one."""
        found = _UntilCommit(self._metrics)
        async with self._transaction() as conn:
            if await _insert(conn, key, key.op.value, reply):
                return reply
            answer = await _existing_forward(conn, key, found)
        found.report()
        return answer

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            await guard_session(conn, self._options.session_timeout_s)
            async with conn.begin():
                yield conn


class _UntilCommit(ParticipantMetrics):
    """Holds what one attempt found (a duplicate, a null compensation, a hanging call) until
    its transaction commits: an attempt rolled back and retried after a transient error
    must count once, and a null compensation's rows may still roll back."""

    def __init__(self, metrics: ParticipantMetrics) -> None:
        self._metrics = metrics
        self._found: list[tuple[Callable[[Op], None], Op]] = []

    def duplicate(self, op: Op) -> None:
        self._found.append((self._metrics.duplicate, op))

    def null_compensation(self, op: Op) -> None:
        self._found.append((self._metrics.null_compensation, op))

    def hanging_refusal(self, op: Op) -> None:
        self._found.append((self._metrics.hanging_refusal, op))

    def report(self) -> None:
        for hook, op in self._found:
            hook(op)


# The row an op inserts for itself already holds the reply of a handler that returns no
# result: on the usual path nothing is written after the handler (no UPDATE). Others
# see the row only once it commits, so it never shows a reply before there is one.
_EMPTY_OK = Reply(Outcome.OK)


async def _forward(conn: AsyncConnection, key: BranchKey, fn: BusinessFn,
                   metrics: ParticipantMetrics) -> Reply:
    if await _insert(conn, key, key.op.value, _EMPTY_OK):
        return await _run(conn, key, fn)
    return await _existing_forward(conn, key, metrics)


async def _existing_forward(conn: AsyncConnection, key: BranchKey, metrics: ParticipantMetrics) -> Reply:
    row = await _read(conn, key)
    if row.reason != key.op.value:
        metrics.hanging_refusal(key.op)
        return Reply(
            Outcome.FAILED,
            message=f"{key.op} refused: its undo already ran ({row.reason}); hanging request",
        )
    metrics.duplicate(key.op)
    return row.reply()  # duplicate: the same answer as the first time


async def _undo(conn: AsyncConnection, key: BranchKey, forward: Op, fn: BusinessFn,
                metrics: ParticipantMetrics) -> Reply:
    forward_key = key.with_op(forward)
    if not await _insert(conn, key, key.op.value, _EMPTY_OK):
        metrics.duplicate(key.op)
        reply = (await _read(conn, key)).reply()
        if key.op is Op.COMPENSATE and reply.outcome is Outcome.OK:
            # A repeat says what the first answer said: null when this undo wrote the
            # forward op's row (the row keeps no flag; its reason tells).
            null = (await _read(conn, forward_key)).reason == UNDO_REASON[key.op]
            reply = replace(reply, null_compensation=null)
        return reply
    if await _insert(conn, forward_key, UNDO_REASON[key.op], None):
        metrics.null_compensation(key.op)
        note = f"null {key.op}: {forward} never ran"
        nothing = Reply(Outcome.OK, message=note, null_compensation=key.op is Op.COMPENSATE)
        return await _store(conn, key, nothing)
    if (await _read(conn, forward_key)).outcome != Outcome.OK:
        note = f"nothing to undo: {forward} was refused"
        return await _store(conn, key, Reply(Outcome.OK, message=note))
    return await _run(conn, key, fn)


async def _run(conn: AsyncConnection, key: BranchKey, fn: BusinessFn) -> Reply:
    try:
        result = await fn(conn)
    except Refused as exc:
        # Execute/prepare: the refusal is an answer to keep (a vote, a failed action), so it
        # is recorded after the rollback. Undo/commit: nothing is kept, the retry runs again.
        raise _Rollback(refusal(exc), record=key.op in _RECORDED_REFUSALS) from exc
    reply = Reply(Outcome.OK, as_result(result))
    if reply.result:  # the row already says OK with no result
        await _store(conn, key, reply)
    return reply


async def _insert(conn: AsyncConnection, key: BranchKey, reason: str, reply: Reply | None) -> bool:
    """Insert the key's row, holding ``reply`` (None: no reply, a row an undo writes for its
    forward op); True when inserted. A twin's uncommitted row makes this wait for it."""
    sql = barrier_sql(conn)
    outcome = int(reply.outcome) if reply is not None else None
    message = (reply.message or None) if reply is not None else None
    params = (key.gid, key.branch, key.op.value, reason, outcome, message)
    return (await conn.exec_driver_sql(sql.insert, params)).rowcount == 1


async def _read(conn: AsyncConnection, key: BranchKey) -> _Row:
    params = (key.gid, key.branch, key.op.value)
    row: tuple[str, int | None, bytes | None, str | None] = tuple(
        (await conn.exec_driver_sql(barrier_sql(conn).read, params)).one())
    return _Row(*row)


async def _store(conn: AsyncConnection, key: BranchKey, reply: Reply) -> Reply:
    sql = barrier_sql(conn)
    params = (int(reply.outcome), sql.blob(reply.result), reply.message or None,
              key.gid, key.branch, key.op.value)
    await conn.exec_driver_sql(sql.store, params)
    return reply
