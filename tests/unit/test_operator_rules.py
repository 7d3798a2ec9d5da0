"""Operator actions on the pure records: what each state allows."""

from __future__ import annotations

import pytest

from coordinator.domain import operator, saga, two_phase
from coordinator.domain.errors import FailedPrecondition, NotFound
from coordinator.domain.events import Answered, DeadlinePassed
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


def failed_saga() -> TxRecord:
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", f"{n}.undo") for n in "ab")
    rec = saga.start(new_record(gid="g", protocol=Protocol.SAGA, plan=plan, now=0, timeout_s=9), 0)
    rec = saga.apply(rec.record, Answered("a", Op.EXECUTE, True), 0)
    rec = saga.apply(rec.record, Answered("b", Op.EXECUTE, False, message="no"), 0)
    rec = saga.apply(rec.record, Answered("a", Op.COMPENSATE, False, message="bug"), 0)
    assert rec.record.state is TxState.FAILED
    return rec.record


def committing_2pc() -> TxRecord:
    plan = (BranchPlan("a", "p:1", "a.do"),)
    rec = two_phase.start(new_record(gid="t", protocol=Protocol.TWO_PHASE, plan=plan, now=0,
                                     timeout_s=9), 0)
    return two_phase.apply(rec.record, Answered("a", Op.PREPARE, True), 0).record


def test_replay_resumes_a_failed_compensation_with_fresh_budget_and_history() -> None:
    step = operator.replay(failed_saga(), "operator:ann", "fixed the refund bug", 5)
    assert step.record.state is TxState.COMPENSATING
    assert step.calls == (Call("a", Op.COMPENSATE),)
    assert step.record.status("a").attempts == 0
    last = step.record.history[-1]
    assert (last.actor, last.action, last.reason) == ("operator:ann", "replay", "fixed the refund bug")


def test_replay_keeps_the_cause_the_error_and_the_attempts_of_settled_branches() -> None:
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", f"{n}.undo") for n in "abc")
    rec = saga.start(new_record(gid="g", protocol=Protocol.SAGA, plan=plan, now=0, timeout_s=9), 0)
    rec = saga.apply(rec.record, Answered("a", Op.EXECUTE, True, attempts=2), 0)
    rec = saga.apply(rec.record, Answered("b", Op.EXECUTE, True, attempts=4), 0)
    rec = saga.apply(rec.record, Answered("c", Op.EXECUTE, False, message="no", attempts=1), 0)
    rec = saga.apply(rec.record, Answered("b", Op.COMPENSATE, True, attempts=3), 0)
    rec = saga.apply(rec.record, Answered("a", Op.COMPENSATE, False, message="bug", attempts=5), 0)
    failed = rec.record
    assert failed.cause == "branch c failed: no"
    step = operator.replay(failed, "operator:ann", "fixed the refund bug", 5)
    # Still compensating because c refused: the error says so, the first cause stays.
    assert step.record.error == "branch c failed: no"
    assert step.record.cause == "branch c failed: no"
    # b's compensation and c's refusal are settled: their counts stay; a's starts afresh.
    assert [s.attempts for s in step.record.branches] == [0, 3, 1]
    done = saga.apply(step.record, Answered("a", Op.COMPENSATE, True, attempts=1), 6).record
    assert done.state is TxState.COMPENSATED and done.error == "branch c failed: no"


def test_the_first_cause_survives_a_skip_and_operator_steps_outlive_a_long_history() -> None:
    record = failed_saga()
    for i in range(40):  # replay, fail again, ...: more entries than the history keeps
        record = operator.replay(record, "operator:ann", f"try {i}", i).record
        record = saga.apply(record, Answered("a", Op.COMPENSATE, False, message="bug"), i).record
    record = operator.skip(record, "a", "operator:bob", "refunded by hand", 50).record
    assert record.state is TxState.COMPENSATED
    assert record.cause == "branch b failed: no" and record.error == "branch b failed: no"
    operator_steps = [h.reason for h in record.history if h.actor.startswith("operator:")]
    assert len(record.history) == 32 and len(operator_steps) == 32  # the newest 32 of 41
    assert operator_steps[-1] == "a: refunded by hand"


def test_a_null_compensation_is_told_apart_from_an_undo() -> None:
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", f"{n}.undo") for n in "ab")
    rec = saga.start(new_record(gid="g", protocol=Protocol.SAGA, plan=plan, now=0, timeout_s=9), 0)
    rec = saga.apply(rec.record, Answered("a", Op.EXECUTE, True), 0)
    rec = saga.apply(rec.record, DeadlinePassed(), 0)  # b's outcome unknown: compensated too
    rec = saga.apply(rec.record, Answered("b", Op.COMPENSATE, True, null_compensation=True), 1)
    rec = saga.apply(rec.record, Answered("a", Op.COMPENSATE, True), 2)
    assert rec.record.state is TxState.COMPENSATED
    assert [s.null_compensation for s in rec.record.branches] == [False, True]


def test_skip_a_stuck_compensation_finishes_the_saga() -> None:
    step = operator.skip(failed_saga(), "a", "operator:ann", "refunded by hand", 5)
    assert step.record.state is TxState.COMPENSATED
    assert step.record.status("a").state is BranchState.SKIPPED
    with pytest.raises(NotFound):
        operator.skip(failed_saga(), "zz", "op", "r", 5)


def test_after_a_skip_the_error_is_the_first_cause_and_the_failure_stays_in_history() -> None:
    step = operator.skip(failed_saga(), "a", "operator:ann", "refunded by hand", 5)
    assert step.record.error == "branch b failed: no"  # why it compensated, not the old refusal
    assert [(h.action, h.reason) for h in step.record.history] == [
        ("compensate", "branch b failed: no"), ("failed", "compensation of a refused: bug"),
        ("skip", "a: refunded by hand")]


def test_after_a_skip_of_a_failed_2pc_abort_the_error_is_why_it_aborted() -> None:
    plan = (BranchPlan("a", "p:1", "a.do"), BranchPlan("b", "p:1", "b.do"))
    rec = two_phase.start(new_record(gid="t", protocol=Protocol.TWO_PHASE, plan=plan, now=0,
                                     timeout_s=9), 0).record
    rec = two_phase.apply(rec, Answered("a", Op.PREPARE, True), 0).record
    rec = two_phase.apply(rec, Answered("b", Op.PREPARE, False, message="no stock"), 0).record
    rec = two_phase.apply(rec, Answered("a", Op.ABORT, False, message="bug"), 0).record
    assert rec.state is TxState.FAILED and rec.error == "abort of a refused: bug"
    step = operator.skip(rec, "a", "op", "rolled back by hand", 5)
    assert step.record.state is TxState.ABORTED
    assert step.record.error == "branch b voted no: no stock"


def test_abort_rules() -> None:
    with pytest.raises(FailedPrecondition, match="decided to commit"):
        operator.abort(committing_2pc(), "op", "r", 1)
    with pytest.raises(FailedPrecondition, match="replay resumes"):
        operator.abort(failed_saga(), "op", "r", 1)
    plan = (BranchPlan("a", "p:1", "a.do", "a.undo"),)
    running = saga.start(new_record(gid="r", protocol=Protocol.SAGA, plan=plan, now=0,
                                    timeout_s=9), 0).record
    step = operator.abort(running, "op", "customer cancelled", 1)
    assert step.record.state is TxState.COMPENSATING
    assert step.calls == (Call("a", Op.COMPENSATE),)


def test_nothing_to_do_on_terminal_transactions() -> None:
    done = operator.skip(failed_saga(), "a", "op", "r", 5).record
    for action in (lambda r: operator.replay(r, "op", "r", 1),
                   lambda r: operator.abort(r, "op", "r", 1)):
        with pytest.raises(FailedPrecondition, match="COMPENSATED"):
            action(done)
