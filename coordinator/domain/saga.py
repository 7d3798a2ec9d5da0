"""The saga state machine: pure functions from (record, event, now) to a Transition.

Rules:
- Sequential sagas run branches in list order; concurrent ones run every branch whose
  ``after`` branches have all succeeded.
- A refusal (OUTCOME_FAILED) or the deadline starts compensation. A branch that
  succeeded, or whose outcome is unknown (still RUNNING: it may have run), is compensated;
  a branch that was refused or never started is not, unless the record announces intents
  ahead (domain.durability): then a PENDING branch may have been called, and is
  compensated. A branch with no compensation is SKIPPED.
- Compensation runs in reverse order: a branch is undone only once every branch that ran
  after it (its dependents) is settled.
- A compensation that is refused or runs out of retries leaves the saga FAILED for an
  operator; nothing is dropped silently.
- A misconfigured participant (no such method, or a reply without an outcome) is not
  retried: an action compensates at once (the branch itself too when it may have run), a
  compensation leaves the saga FAILED.
- A branch's ``attempts`` counts the calls of its current operation; the write that settles
  the operation records the count.
"""

from __future__ import annotations

from dataclasses import replace

from ._common import counted, erred
from ._common import fail as _fail
from ._common import note as _note
from ._common import stamp as _stamp
from ._common import touch as _touch
from .durability import announced
from .events import Answered, AttemptFailed, DeadlinePassed, Event, GaveUp, Misconfigured
from .records import BranchState, BranchStatus, Call, Op, Transition, TxRecord, TxState

_RAN = frozenset({BranchState.SUCCEEDED, BranchState.RUNNING})  # or may have
_UNDO_NEEDED = _RAN | {BranchState.COMPENSATING}


def start(record: TxRecord, now: float) -> Transition:
    """Move a fresh record to its first calls, every later branch's intent announced."""
    step = advance_forward(record, now)
    return Transition(announced(step.record), step.calls)


def resume(record: TxRecord) -> Transition:
    """The calls to re-issue for a record loaded from the log (restart or takeover).

    Every step in flight is repeated with its original idempotency key; the participant's
    barrier turns a repeat of something that already ran into a no-op.
    """
    if record.state is TxState.RUNNING:
        op, wanted = Op.EXECUTE, BranchState.RUNNING
    elif record.state is TxState.COMPENSATING:
        op, wanted = Op.COMPENSATE, BranchState.COMPENSATING
    else:
        return Transition(record)
    calls = tuple(
        Call(plan.name, op)
        for plan, status in zip(record.plan, record.branches, strict=True)
        if status.state is wanted
    )
    return Transition(record, calls)


def apply(record: TxRecord, event: Event, now: float) -> Transition:
    """Apply one event; events that no longer fit the record's state change nothing."""
    if isinstance(event, AttemptFailed):
        return _attempt_failed(record, event, now)
    if isinstance(event, DeadlinePassed):
        if record.state is TxState.RUNNING and not record.frozen_since:
            return begin_compensation(record, "saga deadline exceeded", now)
        return Transition(record)
    if isinstance(event, Answered):
        return _reply(record, event, now)
    if isinstance(event, Misconfigured):
        return _misconfigured(record, event, now)
    return _gave_up(record, event, now)


def dependencies(record: TxRecord, name: str) -> tuple[str, ...]:
    """Branches that must succeed before ``name`` runs (and be undone after it)."""
    if record.concurrent:
        return record.plan[record.index(name)].after
    i = record.index(name)
    return (record.plan[i - 1].name,) if i > 0 else ()


def _reply(record: TxRecord, event: Answered, now: float) -> Transition:
    status = counted(record.status(event.branch), event.attempts)
    if event.op == Op.EXECUTE:
        if record.state is not TxState.RUNNING or status.state is not BranchState.RUNNING:
            return Transition(record)  # late answer: compensation already owns this branch
        if event.ok:
            done = replace(status, state=BranchState.SUCCEEDED, result=event.result, error="")
            record = record.with_branch(event.branch, _stamp(done, now))  # when it succeeded
            return advance_forward(_touch(record, now), now)
        refused = replace(status, state=BranchState.FAILED, error=event.message)
        record = record.with_branch(event.branch, _stamp(refused, now))
        return begin_compensation(record, f"branch {event.branch} failed: {event.message}", now)
    if record.state is not TxState.COMPENSATING or status.state is not BranchState.COMPENSATING:
        return Transition(record)
    if event.ok:
        undone = replace(status, state=BranchState.COMPENSATED, error="",
                         null_compensation=event.null_compensation)
        record = record.with_branch(event.branch, _stamp(undone, now))
        return advance_compensation(record, now)
    reason = f"compensation of {event.branch} refused: {event.message}"
    return _fail(record.with_branch(event.branch, status), event.branch, reason, now)


def _gave_up(record: TxRecord, event: GaveUp, now: float) -> Transition:
    status = counted(record.status(event.branch), event.attempts)
    if event.op == Op.EXECUTE:
        if record.state is not TxState.RUNNING or status.state is not BranchState.RUNNING:
            return Transition(record)
        # Outcome unknown: the branch stays RUNNING so that compensation undoes it.
        record = record.with_branch(event.branch, _stamp(replace(status, error=event.error), now))
        reason = f"branch {event.branch} gave no answer: {event.error}"
        return begin_compensation(record, reason, now)
    if record.state is not TxState.COMPENSATING:
        return Transition(record)
    record = record.with_branch(event.branch, status)
    return _fail(record, event.branch, f"compensation of {event.branch} exhausted its retries: "
                 f"{event.error}", now)


def _misconfigured(record: TxRecord, event: Misconfigured, now: float) -> Transition:
    if not wanted(record, Call(event.branch, event.op)):
        return Transition(record)
    status = counted(record.status(event.branch), event.attempts)
    if event.op == Op.COMPENSATE:
        record = record.with_branch(event.branch, status)
        return _fail(record, event.branch, event.error, now)
    # Never ran (no such method): FAILED, not compensated. May have run: stays RUNNING,
    # so that compensation undoes it.
    state = BranchState.RUNNING if event.may_have_run else BranchState.FAILED
    broken = replace(status, state=state, error=event.error)
    record = record.with_branch(event.branch, _stamp(broken, now))
    return begin_compensation(record, f"branch {event.branch}: {event.error}", now)


def _attempt_failed(record: TxRecord, event: AttemptFailed, now: float) -> Transition:
    status = record.status(event.branch)
    expected = BranchState.RUNNING if event.op == Op.EXECUTE else BranchState.COMPENSATING
    if status.state is not expected:
        return Transition(record)
    noted = replace(counted(status, event.attempt), error=event.error)

    return Transition(_touch(record.with_branch(event.branch, _stamp(noted, now)), now))


def advance_forward(record: TxRecord, now: float) -> Transition:
    states = {p.name: s.state for p, s in zip(record.plan, record.branches, strict=True)}
    if all(s is BranchState.SUCCEEDED for s in states.values()):
        return Transition(_touch(replace(record, state=TxState.COMMITTED, error=""), now))
    calls: list[Call] = []
    for plan in record.plan:
        if states[plan.name] is not BranchState.PENDING:
            continue
        if all(states[d] is BranchState.SUCCEEDED for d in dependencies(record, plan.name)):
            running = BranchStatus(state=BranchState.RUNNING, updated_at=now)
            record = record.with_branch(plan.name, running)
            calls.append(Call(plan.name, Op.EXECUTE))
    return Transition(_touch(record, now), tuple(calls))


def begin_compensation(record: TxRecord, reason: str, now: float) -> Transition:
    record = replace(erred(record, reason), state=TxState.COMPENSATING, phase_started_at=now)
    return advance_compensation(_note(record, "compensate", reason, now), now)


def advance_compensation(record: TxRecord, now: float) -> Transition:
    calls: list[Call] = []
    progressed = True
    while progressed:  # skipping a branch may free the ones it depended on
        progressed = False
        for plan in reversed(record.plan):
            status = record.status(plan.name)
            if not _may_have_run(record, status):
                continue
            if not _dependents_settled(record, plan.name):
                continue
            if not plan.compensation:
                record = record.with_branch(plan.name, _stamp(
                    replace(status, state=BranchState.SKIPPED), now))
                progressed = True
                continue
            undoing = replace(status, state=BranchState.COMPENSATING, attempts=0, error="")
            record = record.with_branch(plan.name, _stamp(undoing, now))
            calls.append(Call(plan.name, Op.COMPENSATE))
    if not any(_undo_needed(record, s) for s in record.branches):
        record = replace(record, state=TxState.COMPENSATED)
    return Transition(_touch(record, now), tuple(calls))


def _may_have_run(record: TxRecord, status: BranchStatus) -> bool:
    """Succeeded, or its outcome unknown: compensated."""
    return status.state in _RAN or _announced(record, status)


def _undo_needed(record: TxRecord, status: BranchStatus) -> bool:
    return status.state in _UNDO_NEEDED or _announced(record, status)


def _announced(record: TxRecord, status: BranchStatus) -> bool:
    """PENDING in a record whose intents were announced ahead: a coordinator that loaded it
    cannot know it was never called, so it is undone like one that may have run (a null
    compensation where it never did)."""
    return record.intents_ahead and status.state is BranchState.PENDING


def _dependents_settled(record: TxRecord, name: str) -> bool:
    for plan, status in zip(record.plan, record.branches, strict=True):
        if name in dependencies(record, plan.name) and _undo_needed(record, status):
            return False
    return True


def wanted(record: TxRecord, call: Call) -> bool:
    status = record.status(call.branch)
    if call.op == Op.EXECUTE:
        return record.state is TxState.RUNNING and status.state is BranchState.RUNNING
    return record.state is TxState.COMPENSATING and status.state is BranchState.COMPENSATING


def deadline(record: TxRecord) -> float | None:
    if record.frozen_since:  # waiting on a hold or paused: the deadline stands still
        return None
    return record.deadline if record.state is TxState.RUNNING else None


def retry_deadline(record: TxRecord, op: str, phase_budget_s: float) -> float:
    if op == Op.EXECUTE:
        return record.deadline
    return record.phase_started_at + phase_budget_s
