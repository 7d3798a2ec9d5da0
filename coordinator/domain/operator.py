"""Operator actions as pure transitions: replay, skip a branch, abort.

Each records who did what and why in the history. Replays repeat steps with their original
idempotency keys (only the attempt budgets are fresh), so nothing is applied twice.
"""

from __future__ import annotations

from dataclasses import replace

from . import saga, two_phase
from ._common import note, stamp, touch
from .errors import FailedPrecondition, NotFound
from .records import BranchState, Protocol, Transition, TxRecord, TxState

B = BranchState
SKIPPABLE = frozenset({B.RUNNING, B.COMPENSATING, B.PREPARED, B.PENDING})
"""Branch states an operator may mark done by hand: work not (known to be) finished."""


# -- what each action allows: the actions below refuse what these do not allow, and
# -- operators' tools (txc tx, the console) offer what they do.

def may_replay(state: TxState) -> bool:
    return not state.terminal  # as every action: nothing to do on a finished transaction


def may_skip(state: TxState, branch: BranchState) -> bool:
    return not state.terminal and branch in SKIPPABLE


def may_abort(protocol: Protocol, state: TxState, decision: str) -> bool:
    """Saga: only while RUNNING (past it, replay resumes the compensation). 2PC: only
    before any decision (``decision``: "commit", "abort" or "")."""
    if state.terminal:
        return False
    if protocol is Protocol.TWO_PHASE:
        return not decision and state is not TxState.ABORTING
    return state is TxState.RUNNING


def replay(record: TxRecord, actor: str, reason: str, now: float) -> Transition:
    """Re-drive a FAILED or stuck transaction from where it stands, with fresh budgets."""
    _not_terminal(record, "replay")
    record = _resume_phase(record) if record.state is TxState.FAILED else record
    machine = saga if record.protocol is Protocol.SAGA else two_phase
    calls = machine.resume(record).calls
    # Only the operations called again start a fresh count: a settled branch keeps the
    # attempts its operation took. The error is why the phase runs (not cleared: a saga
    # that compensates because of a refusal still says so); ``cause`` keeps the first.
    again = {c.branch for c in calls}
    fresh = tuple(replace(s, attempts=0) if p.name in again else s
                  for p, s in zip(record.plan, record.branches, strict=True))
    record = replace(record, branches=fresh, phase_started_at=now, error=phase_cause(record))
    record = touch(note(record, "replay", reason, now, actor), now)
    return Transition(record, calls)


def skip(record: TxRecord, branch: str, actor: str, reason: str, now: float) -> Transition:
    """Mark one branch done by hand (fixed outside), then let the transaction go on."""
    _not_terminal(record, "skip")
    try:
        status = record.status(branch)
    except KeyError:
        raise NotFound(f"transaction {record.gid!r} has no branch {branch!r}") from None
    if not may_skip(record.state, status.state):
        raise FailedPrecondition(f"branch {branch!r} is {status.state.name}: nothing to skip")
    if record.state is TxState.FAILED:
        # The failure was this branch's; once it is skipped the error is why the phase
        # runs again (the first cause). The failure and the skip stay in the history.
        record = replace(_resume_phase(record), error=phase_cause(record))
    done = B.SUCCEEDED if record.state is TxState.RUNNING else B.SKIPPED
    if record.state is TxState.COMMITTING:
        done = B.COMMITTED
    record = record.with_branch(branch, stamp(replace(status, state=done, error=""), now))
    record = note(record, "skip", f"{branch}: {reason}", now, actor)
    if record.protocol is Protocol.SAGA:
        return _saga_continue(record, now)
    return _two_phase_continue(record, now)


def abort(record: TxRecord, actor: str, reason: str, now: float) -> Transition:
    """Saga: compensate. 2PC: abort unless commit was decided."""
    _not_terminal(record, "abort")
    if not may_abort(record.protocol, record.state, record.decision):
        raise FailedPrecondition(_why_no_abort(record))
    record = note(record, "abort", reason, now, actor)
    if record.protocol is Protocol.TWO_PHASE:
        return two_phase.decide_abort(record, f"aborted by {actor}: {reason}", now)
    return saga.begin_compensation(record, f"aborted by {actor}: {reason}", now)


def _why_no_abort(record: TxRecord) -> str:
    if record.protocol is Protocol.SAGA:
        return (f"saga {record.gid!r} is {record.state.name}, not RUNNING; replay resumes its "
                "compensation")
    if record.decision == "commit":
        return (f"transaction {record.gid!r} decided to commit; it can no longer abort (replay "
                "finishes the commit)")
    return f"transaction {record.gid!r} is already aborting; replay it"


def _not_terminal(record: TxRecord, action: str) -> None:
    if record.state.terminal:
        raise FailedPrecondition(f"transaction {record.gid!r} is {record.state.name}: "
                                 f"nothing to {action}")


def phase_cause(record: TxRecord) -> str:
    """Why the transaction is compensating or aborting, as recorded when it turned (the
    newest "compensate" entry, or the "decide" to abort); "" for a 2PC committing. When the
    history no longer holds the entry (it keeps the last 32), the first cause: a saga turns
    back once, a 2PC decides once, so the first error is what made it turn."""
    for entry in reversed(record.history):
        if entry.action == "compensate" and record.protocol is Protocol.SAGA:
            return entry.reason
        if entry.action == "decide" and entry.reason.startswith("abort: "):
            return entry.reason.removeprefix("abort: ")
        if entry.action == "decide":
            return ""
    turned = record.protocol is Protocol.SAGA or record.decision == "abort"
    return record.cause if turned else ""


def _resume_phase(record: TxRecord) -> TxRecord:
    """The state a FAILED transaction was in when it failed."""
    if record.protocol is Protocol.TWO_PHASE:
        state = TxState.COMMITTING if record.decision == "commit" else TxState.ABORTING
    else:
        state = TxState.COMPENSATING  # sagas fail only while compensating
    return replace(record, state=state)


def _saga_continue(record: TxRecord, now: float) -> Transition:
    if record.state is TxState.RUNNING:
        return saga.advance_forward(record, now)
    return saga.advance_compensation(record, now)


def _two_phase_continue(record: TxRecord, now: float) -> Transition:
    if record.state is TxState.PREPARING:
        states = {s.state for s in record.branches}
        if states <= {B.PREPARED, B.SKIPPED}:
            return two_phase.decide_commit(record, now)
        return Transition(touch(record, now))
    return two_phase.maybe_finish(record, now)
