"""Every saga rule, on the pure state machine (no I/O)."""

from __future__ import annotations

from coordinator.domain import saga
from coordinator.domain.durability import as_creator_drives
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


def plan(*names: str, after: dict[str, tuple[str, ...]] | None = None,
         no_undo: tuple[str, ...] = ()) -> tuple[BranchPlan, ...]:
    after = after or {}
    return tuple(BranchPlan(name=n, participant="p:1", action=f"{n}.do",
                            compensation="" if n in no_undo else f"{n}.undo",
                            after=after.get(n, ())) for n in names)


def record(*names: str, concurrent: bool = False, **kw: object) -> TxRecord:
    return new_record(gid="g", protocol=Protocol.SAGA, plan=plan(*names, **kw),  # type: ignore[arg-type]
                      now=0.0, timeout_s=10.0, concurrent=concurrent)


def states(rec: TxRecord) -> dict[str, BranchState]:
    return {p.name: s.state for p, s in zip(rec.plan, rec.branches, strict=True)}


def ok(name: str, op: str = Op.EXECUTE) -> Answered:
    return Answered(name, op, ok=True)


def refuse(name: str, op: str = Op.EXECUTE) -> Answered:
    return Answered(name, op, ok=False, message="no")


def test_sequential_runs_in_list_order_and_commits() -> None:
    step = saga.start(record("a", "b", "c"), 1.0)
    assert step.calls == (Call("a", Op.EXECUTE),)
    step = saga.apply(step.record, ok("a"), 2.0)
    assert step.calls == (Call("b", Op.EXECUTE),)
    step = saga.apply(step.record, ok("b"), 3.0)
    step = saga.apply(step.record, ok("c"), 4.0)
    assert step.record.state is TxState.COMMITTED
    assert step.calls == ()
    assert set(states(step.record).values()) == {B.SUCCEEDED}


def test_refusal_compensates_succeeded_branches_in_reverse_order() -> None:
    step = saga.start(record("a", "b", "c"), 0)
    step = saga.apply(step.record, ok("a"), 0)
    step = saga.apply(step.record, ok("b"), 0)
    step = saga.apply(step.record, refuse("c"), 0)
    assert step.record.state is TxState.COMPENSATING
    assert states(step.record)["c"] is B.FAILED  # refused: never applied, not compensated
    assert step.calls == (Call("b", Op.COMPENSATE),)  # b before a
    step = saga.apply(step.record, ok("b", Op.COMPENSATE), 0)
    assert step.calls == (Call("a", Op.COMPENSATE),)
    step = saga.apply(step.record, ok("a", Op.COMPENSATE), 0)
    assert step.record.state is TxState.COMPENSATED
    assert states(step.record) == {"a": B.COMPENSATED, "b": B.COMPENSATED, "c": B.FAILED}


def test_the_creation_announces_every_later_branch() -> None:
    assert saga.start(record("a", "b"), 0).record.intents_ahead
    assert not saga.start(record("a"), 0).record.intents_ahead  # nothing left to announce
    assert not saga.start(record("a", "b", concurrent=True), 0).record.intents_ahead


def test_branches_that_never_started_are_not_compensated_by_their_creator() -> None:
    step = saga.start(record("a", "b", "c"), 0)
    step = saga.apply(as_creator_drives(step.record), refuse("a"), 0)
    assert step.record.state is TxState.COMPENSATED
    assert step.calls == ()
    assert states(step.record) == {"a": B.FAILED, "b": B.PENDING, "c": B.PENDING}


def test_announced_branches_are_compensated_by_whoever_loads_the_record() -> None:
    """Loaded from the log (takeover, restart), a PENDING branch may have been called:
    compensated, in reverse order, like one whose outcome is unknown."""
    loaded = saga.apply(saga.start(record("a", "b", "c"), 0).record, ok("a"), 0).record
    assert states(loaded) == {"a": B.SUCCEEDED, "b": B.RUNNING, "c": B.PENDING}
    step = saga.apply(loaded, DeadlinePassed(), 1)
    assert step.calls == (Call("c", Op.COMPENSATE),)  # c may have run after b
    step = saga.apply(step.record, Answered("c", Op.COMPENSATE, ok=True, null_compensation=True), 1)
    assert step.calls == (Call("b", Op.COMPENSATE),)
    step = saga.apply(step.record, ok("b", Op.COMPENSATE), 1)
    step = saga.apply(step.record, ok("a", Op.COMPENSATE), 1)
    assert step.record.state is TxState.COMPENSATED
    assert step.record.status("c").null_compensation


def test_branch_without_compensation_is_skipped() -> None:
    step = saga.start(record("a", "b", "c", no_undo=("b",)), 0)
    step = saga.apply(step.record, ok("a"), 0)
    step = saga.apply(step.record, ok("b"), 0)
    step = saga.apply(step.record, refuse("c"), 0)
    assert states(step.record)["b"] is B.SKIPPED
    assert step.calls == (Call("a", Op.COMPENSATE),)


def test_unknown_outcome_is_compensated_because_it_may_have_run() -> None:
    step = saga.start(record("a", "b"), 0)
    step = saga.apply(step.record, ok("a"), 0)
    step = saga.apply(step.record, GaveUp("b", Op.EXECUTE, "DEADLINE_EXCEEDED"), 0)
    assert step.record.state is TxState.COMPENSATING
    assert step.calls == (Call("b", Op.COMPENSATE),)
    assert "gave no answer" in step.record.error


def test_deadline_compensates_running_saga_and_is_ignored_afterwards() -> None:
    step = saga.start(record("a", "b"), 0)
    step = saga.apply(step.record, ok("a"), 0)
    step = saga.apply(step.record, DeadlinePassed(), 11)
    assert step.record.state is TxState.COMPENSATING
    assert step.record.error == "saga deadline exceeded"
    assert set(step.calls) == {Call("b", Op.COMPENSATE)}  # b is in flight: may have run
    again = saga.apply(step.record, DeadlinePassed(), 12)
    assert again.record is step.record


def test_concurrent_runs_roots_then_dependents() -> None:
    rec = record("a", "b", "c", concurrent=True, after={"c": ("a", "b")})
    step = saga.start(rec, 0)
    assert set(step.calls) == {Call("a", Op.EXECUTE), Call("b", Op.EXECUTE)}
    step = saga.apply(step.record, ok("a"), 0)
    assert step.calls == ()
    step = saga.apply(step.record, ok("b"), 0)
    assert step.calls == (Call("c", Op.EXECUTE),)
    step = saga.apply(step.record, ok("c"), 0)
    assert step.record.state is TxState.COMMITTED


def test_concurrent_compensation_follows_reverse_dag() -> None:
    # a -> b -> d, a -> c ; d refuses: undo b only after d settled, a after b and c.
    rec = record("a", "b", "c", "d", concurrent=True,
                 after={"b": ("a",), "c": ("a",), "d": ("b",)})
    step = saga.start(rec, 0)
    step = saga.apply(step.record, ok("a"), 0)
    assert set(step.calls) == {Call("b", Op.EXECUTE), Call("c", Op.EXECUTE)}
    step = saga.apply(step.record, ok("b"), 0)
    step = saga.apply(step.record, refuse("d"), 0)
    # c is still in flight (RUNNING): it may have run, so it is compensated too.
    assert set(step.calls) == {Call("b", Op.COMPENSATE), Call("c", Op.COMPENSATE)}
    step = saga.apply(step.record, ok("b", Op.COMPENSATE), 0)
    assert step.calls == ()  # a waits for c
    step = saga.apply(step.record, ok("c", Op.COMPENSATE), 0)
    assert step.calls == (Call("a", Op.COMPENSATE),)
    step = saga.apply(step.record, ok("a", Op.COMPENSATE), 0)
    assert step.record.state is TxState.COMPENSATED


def test_late_forward_reply_during_compensation_changes_nothing() -> None:
    rec = record("a", "b", concurrent=True)
    step = saga.start(rec, 0)
    step = saga.apply(step.record, refuse("a"), 0)
    late = saga.apply(step.record, ok("b"), 0)
    assert late.record is step.record


def test_refused_compensation_fails_the_saga_for_an_operator() -> None:
    step = saga.start(record("a", "b"), 0)
    step = saga.apply(step.record, ok("a"), 0)
    step = saga.apply(step.record, refuse("b"), 0)
    step = saga.apply(step.record, refuse("a", Op.COMPENSATE), 0)
    assert step.record.state is TxState.FAILED
    assert "compensation of a refused" in step.record.error
    assert step.record.history[-1].action == "failed"


def test_compensation_out_of_retries_fails_the_saga() -> None:
    step = saga.start(record("a", "b"), 0)
    step = saga.apply(step.record, ok("a"), 0)
    step = saga.apply(step.record, refuse("b"), 0)
    step = saga.apply(step.record, GaveUp("a", Op.COMPENSATE, "UNAVAILABLE"), 0)
    assert step.record.state is TxState.FAILED
    assert "exhausted" in step.record.error


def test_attempt_failures_are_recorded_without_new_calls() -> None:
    step = saga.start(record("a"), 0)
    step = saga.apply(step.record, AttemptFailed("a", Op.EXECUTE, 1, "UNAVAILABLE"), 1)
    assert step.calls == ()
    assert step.record.status("a").attempts == 1
    assert step.record.status("a").error == "UNAVAILABLE"


def test_resume_repeats_the_steps_in_flight() -> None:
    step = saga.start(record("a", "b", concurrent=True), 0)
    assert set(saga.resume(step.record).calls) == {Call("a", Op.EXECUTE), Call("b", Op.EXECUTE)}
    step = saga.apply(step.record, ok("a"), 0)
    step = saga.apply(step.record, refuse("b"), 0)
    assert saga.resume(step.record).calls == (Call("a", Op.COMPENSATE),)
    step = saga.apply(step.record, ok("a", Op.COMPENSATE), 0)
    assert saga.resume(step.record).calls == ()


def test_wanted_drops_forward_calls_once_compensating() -> None:
    step = saga.start(record("a", "b", concurrent=True), 0)
    assert saga.wanted(step.record, Call("b", Op.EXECUTE))
    step = saga.apply(step.record, refuse("a"), 0)
    assert not saga.wanted(step.record, Call("b", Op.EXECUTE))
    assert saga.wanted(step.record, Call("b", Op.COMPENSATE))


def test_a_succeeded_branch_shows_when_its_action_answered_not_when_it_started() -> None:
    step = saga.start(record("a", "b"), 1.0)
    assert step.record.status("a").updated_at == 1.0  # RUNNING since
    step = saga.apply(step.record, ok("a"), 7.5)  # answered after 6.5 s of retries
    assert step.record.status("a").updated_at == 7.5
    assert step.record.status("b").updated_at == 7.5  # RUNNING since
    step = saga.apply(step.record, ok("b"), 9.0)
    assert step.record.state is TxState.COMMITTED
    assert [s.updated_at for s in step.record.branches] == [7.5, 9.0]
