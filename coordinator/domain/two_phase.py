"""The two-phase commit state machine: pure functions from (record, event, now) to a Transition.

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
- A misconfigured participant (no such method, or a reply without an outcome) is not
  retried: on Prepare the transaction aborts (the branch gets an Abort only if its prepare
  may have run); on Commit or Abort it becomes FAILED.
- A branch's ``attempts`` counts the calls of its current phase: reset when phase 2 starts.
"""

from __future__ import annotations

from dataclasses import replace

from ._common import counted, erred, fail, note, stamp, touch
from .events import Answered, AttemptFailed, DeadlinePassed, Event, GaveUp, Misconfigured
from .records import BranchState, BranchStatus, Call, Op, Transition, TxRecord, TxState

_ABORT_NEEDED = frozenset({BranchState.RUNNING, BranchState.PREPARED})
_PREPARED = frozenset({BranchState.PREPARED})
_EXPECTED: dict[str, tuple[TxState, frozenset[BranchState]]] = {
    Op.PREPARE: (TxState.PREPARING, frozenset({BranchState.RUNNING})),
    Op.COMMIT: (TxState.COMMITTING, frozenset({BranchState.PREPARED})),
    Op.ABORT: (TxState.ABORTING, _ABORT_NEEDED),
}


def start(record: TxRecord, now: float) -> Transition:
    running = BranchStatus(state=BranchState.RUNNING, updated_at=now)
    record = replace(record, state=TxState.PREPARING, branches=tuple(running for _ in record.plan))
    return Transition(touch(record, now), tuple(Call(p.name, Op.PREPARE) for p in record.plan))


def resume(record: TxRecord) -> Transition:
    op = {TxState.PREPARING: Op.PREPARE, TxState.COMMITTING: Op.COMMIT,
          TxState.ABORTING: Op.ABORT}.get(record.state)
    if op is None:
        return Transition(record)
    return Transition(record, tuple(Call(p.name, op) for p in record.plan
                              if wanted(record, Call(p.name, op))))


def wanted(record: TxRecord, call: Call) -> bool:
    state, branch_states = _EXPECTED[call.op]
    return record.state is state and record.status(call.branch).state in branch_states


def deadline(record: TxRecord) -> float | None:
    if record.frozen_since:  # waiting on a hold or paused: the deadline stands still
        return None
    return record.deadline if record.state is TxState.PREPARING else None


def retry_deadline(record: TxRecord, op: str, phase_budget_s: float) -> float:
    if op == Op.PREPARE:
        return record.deadline
    return record.phase_started_at + phase_budget_s


def apply(record: TxRecord, event: Event, now: float) -> Transition:
    if isinstance(event, DeadlinePassed):
        if record.state is TxState.PREPARING and not record.frozen_since:
            return decide_abort(record, "prepare deadline exceeded", now)
        return Transition(record)
    if not wanted(record, Call(event.branch, event.op)):
        return Transition(record)  # late or repeated: the record has moved on
    if isinstance(event, AttemptFailed):
        noted = replace(counted(record.status(event.branch), event.attempt), error=event.error)
        return Transition(touch(record.with_branch(event.branch, stamp(noted, now)), now))
    record = record.with_branch(event.branch, counted(record.status(event.branch), event.attempts))
    if isinstance(event, GaveUp):
        if event.op == Op.PREPARE:
            return decide_abort(record, f"branch {event.branch} did not vote: {event.error}", now)
        return fail(record, event.branch, f"{event.op} of {event.branch} exhausted its retries: "
                    f"{event.error}", now)
    if isinstance(event, Misconfigured):
        return _misconfigured(record, event, now)
    return _reply(record, event, now)


def _misconfigured(record: TxRecord, event: Misconfigured, now: float) -> Transition:
    if event.op != Op.PREPARE:
        return fail(record, event.branch, event.error, now)
    if not event.may_have_run:  # nothing prepared: no Abort to send
        broken = replace(record.status(event.branch), state=BranchState.FAILED, error=event.error)
        record = record.with_branch(event.branch, stamp(broken, now))
    return decide_abort(record, f"branch {event.branch}: {event.error}", now)


def _reply(record: TxRecord, event: Answered, now: float) -> Transition:
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
        return Transition(touch(record, now))
    if not event.ok:
        return fail(record, event.branch, f"{event.op} of {event.branch} refused: {event.message}",
                    now)
    done = BranchState.COMMITTED if event.op == Op.COMMIT else BranchState.ABORTED
    record = record.with_branch(event.branch, stamp(replace(status, state=done, error=""), now))
    return maybe_finish(record, now)


def _phase_two(record: TxRecord, needed: frozenset[BranchState]) -> TxRecord:
    """Fresh attempt counts for the branches phase 2 calls."""
    return replace(record, branches=tuple(replace(s, attempts=0) if s.state in needed else s
                                          for s in record.branches))


def decide_commit(record: TxRecord, now: float) -> Transition:
    record = replace(_phase_two(record, _PREPARED), state=TxState.COMMITTING,
                     phase_started_at=now, error="", decision="commit")
    record = note(record, "decide", "commit: every branch voted yes", now)
    calls = tuple(Call(p.name, Op.COMMIT) for p, s in zip(record.plan, record.branches, strict=True)
                  if s.state is BranchState.PREPARED)
    return maybe_finish(record, now) if not calls else Transition(touch(record, now), calls)


def decide_abort(record: TxRecord, reason: str, now: float) -> Transition:
    record = replace(erred(_phase_two(record, _ABORT_NEEDED), reason), state=TxState.ABORTING,
                     phase_started_at=now, decision="abort")
    record = note(record, "decide", f"abort: {reason}", now)
    calls = tuple(Call(p.name, Op.ABORT) for p, s in zip(record.plan, record.branches, strict=True)
                  if s.state in _ABORT_NEEDED)
    return maybe_finish(record, now) if not calls else Transition(touch(record, now), calls)


def maybe_finish(record: TxRecord, now: float) -> Transition:
    states = {s.state for s in record.branches}
    if record.state is TxState.COMMITTING and states <= {BranchState.COMMITTED, BranchState.SKIPPED}:
        record = replace(record, state=TxState.COMMITTED)
    elif record.state is TxState.ABORTING and not states & _ABORT_NEEDED:
        record = replace(record, state=TxState.ABORTED)
    return Transition(touch(record, now))
