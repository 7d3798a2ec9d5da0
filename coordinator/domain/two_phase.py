"""The two-phase commit state machine: pure functions from (record, event, now) to a Step.

Rules:
- Prepare goes to every branch at once; each vote is written as it arrives.
- The write that moves the record to COMMITTING is the commit point: it happens only when
  every branch voted yes before the prepare deadline. A no vote, a prepare that never
  answered, or the deadline moves it to ABORTING instead (presumed abort: without a
  commit decision in the log, the answer is abort).
- Phase 2 is retried until every branch acknowledges. A branch that voted no has rolled
  back already and gets no abort; one whose prepare is unanswered gets one (it may have
  prepared; the participant's barrier makes a late prepare vote no).
- Phase 2 refused or out of budget: FAILED, for an operator; never dropped.
"""

from __future__ import annotations

from dataclasses import replace

from ._common import fail, note, stamp, touch
from .events import AttemptFailed, DeadlinePassed, Event, GaveUp, Reply
from .records import BranchState, BranchStatus, Call, Op, Step, TxRecord, TxState

_ABORT_NEEDED = frozenset({BranchState.RUNNING, BranchState.PREPARED})
_EXPECTED: dict[str, tuple[TxState, frozenset[BranchState]]] = {
    Op.PREPARE: (TxState.PREPARING, frozenset({BranchState.RUNNING})),
    Op.COMMIT: (TxState.COMMITTING, frozenset({BranchState.PREPARED})),
    Op.ABORT: (TxState.ABORTING, _ABORT_NEEDED),
}


def start(record: TxRecord, now: float) -> Step:
    running = BranchStatus(state=BranchState.RUNNING, updated_at=now)
    record = replace(record, state=TxState.PREPARING, branches=tuple(running for _ in record.plan))
    return Step(touch(record, now), tuple(Call(p.name, Op.PREPARE) for p in record.plan))


def resume(record: TxRecord) -> Step:
    op = {TxState.PREPARING: Op.PREPARE, TxState.COMMITTING: Op.COMMIT,
          TxState.ABORTING: Op.ABORT}.get(record.state)
    if op is None:
        return Step(record)
    return Step(record, tuple(Call(p.name, op) for p in record.plan
                              if wanted(record, Call(p.name, op))))


def wanted(record: TxRecord, call: Call) -> bool:
    state, branch_states = _EXPECTED[call.op]
    return record.state is state and record.status(call.branch).state in branch_states


def deadline(record: TxRecord) -> float | None:
    return record.deadline if record.state is TxState.PREPARING else None


def retry_deadline(record: TxRecord, op: str, phase_budget_s: float) -> float:
    if op == Op.PREPARE:
        return record.deadline
    return record.phase_started_at + phase_budget_s


def apply(record: TxRecord, event: Event, now: float) -> Step:
    if isinstance(event, DeadlinePassed):
        if record.state is TxState.PREPARING:
            return decide_abort(record, "prepare deadline exceeded", now)
        return Step(record)
    if not wanted(record, Call(event.branch, event.op)):
        return Step(record)  # late or repeated: the record has moved on
    if isinstance(event, AttemptFailed):
        status = record.status(event.branch)
        noted = replace(status, attempts=max(status.attempts, event.attempt), error=event.error)
        return Step(touch(record.with_branch(event.branch, stamp(noted, now)), now))
    if isinstance(event, GaveUp):
        if event.op == Op.PREPARE:
            return decide_abort(record, f"branch {event.branch} did not vote: {event.error}", now)
        return fail(record, event.branch, f"{event.op} of {event.branch} exhausted its retries: "
                    f"{event.error}", now)
    return _reply(record, event, now)


def _reply(record: TxRecord, event: Reply, now: float) -> Step:
    status = record.status(event.branch)
    if event.op == Op.PREPARE:
        if not event.ok:
            voted_no = replace(status, state=BranchState.VOTED_NO, error=event.message)
            record = record.with_branch(event.branch, stamp(voted_no, now))
            return decide_abort(record, f"branch {event.branch} voted no: {event.message}", now)
        yes = replace(status, state=BranchState.PREPARED, result=event.result, error="")
        record = record.with_branch(event.branch, stamp(yes, now))
        if all(s.state is BranchState.PREPARED for s in record.branches):
            return decide_commit(record, now)
        return Step(touch(record, now))
    if not event.ok:
        return fail(record, event.branch, f"{event.op} of {event.branch} refused: {event.message}",
                    now)
    done = BranchState.COMMITTED if event.op == Op.COMMIT else BranchState.ABORTED
    record = record.with_branch(event.branch, stamp(replace(status, state=done, error=""), now))
    return maybe_finish(record, now)


def decide_commit(record: TxRecord, now: float) -> Step:
    record = replace(record, state=TxState.COMMITTING, phase_started_at=now, error="",
                     decision="commit")
    record = note(record, "decide", "commit: every branch voted yes", now)
    calls = tuple(Call(p.name, Op.COMMIT) for p, s in zip(record.plan, record.branches, strict=True)
                  if s.state is BranchState.PREPARED)
    return maybe_finish(record, now) if not calls else Step(touch(record, now), calls)


def decide_abort(record: TxRecord, reason: str, now: float) -> Step:
    record = replace(record, state=TxState.ABORTING, phase_started_at=now, error=reason,
                     decision="abort")
    record = note(record, "decide", f"abort: {reason}", now)
    calls = tuple(Call(p.name, Op.ABORT) for p, s in zip(record.plan, record.branches, strict=True)
                  if s.state in _ABORT_NEEDED)
    return maybe_finish(record, now) if not calls else Step(touch(record, now), calls)


def maybe_finish(record: TxRecord, now: float) -> Step:
    states = {s.state for s in record.branches}
    if record.state is TxState.COMMITTING and states <= {BranchState.COMMITTED, BranchState.SKIPPED}:
        record = replace(record, state=TxState.COMMITTED)
    elif record.state is TxState.ABORTING and not states & _ABORT_NEEDED:
        record = replace(record, state=TxState.ABORTED)
    return Step(touch(record, now))
