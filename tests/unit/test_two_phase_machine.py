"""Every 2PC rule, on the pure state machine."""

from __future__ import annotations

from coordinator.domain import two_phase as tp
from coordinator.domain.events import Answered, AttemptFailed, DeadlinePassed, GaveUp
from coordinator.domain.records import (
    BranchPlan,
    BranchState,
    Call,
    Op,
    Protocol,
    TxRecord,
    TxState,
    new_record,
)

B = BranchState


def record(*names: str) -> TxRecord:
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do") for n in names)
    return new_record(gid="g", protocol=Protocol.TWO_PHASE, plan=plan, now=0, timeout_s=10)


def states(rec: TxRecord) -> list[BranchState]:
    return [s.state for s in rec.branches]


def vote(name: str, yes: bool = True) -> Answered:
    return Answered(name, Op.PREPARE, ok=yes, message="" if yes else "no funds")


def test_prepare_goes_to_every_branch_at_once() -> None:
    step = tp.start(record("a", "b", "c"), 0)
    assert step.record.state is TxState.PREPARING
    assert step.calls == tuple(Call(n, Op.PREPARE) for n in "abc")
    assert states(step.record) == [B.RUNNING] * 3


def test_all_yes_decides_commit_in_the_write_of_the_last_vote() -> None:
    step = tp.start(record("a", "b"), 0)
    step = tp.apply(step.record, vote("a"), 1)
    assert step.record.state is TxState.PREPARING and step.calls == ()
    step = tp.apply(step.record, vote("b"), 2)
    assert step.record.state is TxState.COMMITTING
    assert step.calls == (Call("a", Op.COMMIT), Call("b", Op.COMMIT))
    assert step.record.history[-1].action == "decide"
    step = tp.apply(step.record, Answered("a", Op.COMMIT, ok=True), 3)
    assert step.record.state is TxState.COMMITTING
    step = tp.apply(step.record, Answered("b", Op.COMMIT, ok=True), 4)
    assert step.record.state is TxState.COMMITTED
    assert states(step.record) == [B.COMMITTED, B.COMMITTED]


def test_one_no_aborts_the_others_but_not_the_no_voter() -> None:
    step = tp.start(record("a", "b", "c"), 0)
    step = tp.apply(step.record, vote("a"), 0)
    step = tp.apply(step.record, vote("b", yes=False), 0)
    assert step.record.state is TxState.ABORTING
    assert set(step.calls) == {Call("a", Op.ABORT), Call("c", Op.ABORT)}  # c: may have prepared
    late = tp.apply(step.record, vote("c"), 0)
    assert late.record is step.record  # a late yes changes nothing after the decision
    step = tp.apply(step.record, Answered("a", Op.ABORT, ok=True), 0)
    step = tp.apply(step.record, Answered("c", Op.ABORT, ok=True), 0)
    assert step.record.state is TxState.ABORTED
    assert states(step.record) == [B.ABORTED, B.VOTED_NO, B.ABORTED]


def test_single_no_vote_aborts_with_nothing_to_send() -> None:
    step = tp.apply(tp.start(record("a"), 0).record, vote("a", yes=False), 0)
    assert step.record.state is TxState.ABORTED
    assert step.calls == ()


def test_deadline_and_silent_branches_presume_abort() -> None:
    step = tp.start(record("a", "b"), 0)
    step = tp.apply(step.record, vote("a"), 0)
    timed_out = tp.apply(step.record, DeadlinePassed(), 11)
    assert timed_out.record.state is TxState.ABORTING
    assert timed_out.record.error == "prepare deadline exceeded"
    silent = tp.apply(step.record, GaveUp("b", Op.PREPARE, "UNAVAILABLE"), 11)
    assert silent.record.state is TxState.ABORTING
    assert set(silent.calls) == {Call("a", Op.ABORT), Call("b", Op.ABORT)}


def test_deadline_after_the_decision_changes_nothing() -> None:
    step = tp.start(record("a"), 0)
    step = tp.apply(step.record, vote("a"), 0)
    assert tp.apply(step.record, DeadlinePassed(), 20).record is step.record
    assert tp.deadline(step.record) is None


def test_phase_two_out_of_budget_or_refused_fails_for_an_operator() -> None:
    step = tp.start(record("a"), 0)
    step = tp.apply(step.record, vote("a"), 0)
    gave_up = tp.apply(step.record, GaveUp("a", Op.COMMIT, "UNAVAILABLE"), 1)
    assert gave_up.record.state is TxState.FAILED
    refused = tp.apply(step.record, Answered("a", Op.COMMIT, ok=False, message="?"), 1)
    assert refused.record.state is TxState.FAILED


def test_resume_repeats_the_current_phase() -> None:
    step = tp.start(record("a", "b"), 0)
    assert tp.resume(step.record).calls == (Call("a", Op.PREPARE), Call("b", Op.PREPARE))
    step = tp.apply(step.record, vote("a"), 0)
    assert tp.resume(step.record).calls == (Call("b", Op.PREPARE),)
    step = tp.apply(step.record, vote("b"), 0)
    step = tp.apply(step.record, Answered("a", Op.COMMIT, ok=True), 0)
    assert tp.resume(step.record).calls == (Call("b", Op.COMMIT),)


def test_attempt_failures_are_noted() -> None:
    step = tp.start(record("a"), 0)
    step = tp.apply(step.record, AttemptFailed("a", Op.PREPARE, 2, "UNAVAILABLE"), 1)
    assert step.record.status("a").attempts == 2
