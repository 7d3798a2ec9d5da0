"""Served / refused by the business / failed by the fault / unknown: the report's
classification of each transfer (pure; no services)."""

from __future__ import annotations

import grpc
import pytest
from txcoord_chaos.client import told_for, verdict_of
from txcoord_chaos.serving import Answer, business_answers, cause, refusal_in, tally, verdict
from txcoord_chaos.workload.services import (
    INSUFFICIENT_FUNDS,
    OUT_OF_STOCK,
    OUT_OF_STOCK_EVERY,
    Transfer,
)

from coordinator import pb
from coordinator.domain import saga, two_phase
from coordinator.domain.durability import as_creator_drives
from coordinator.domain.events import Answered, GaveUp
from coordinator.domain.records import BranchPlan, Op, Protocol, TxState, new_record

STOCKOUT = OUT_OF_STOCK_EVERY * 3


def _plan() -> list[BranchPlan]:
    return [BranchPlan("debit", "p:1", "accounts.debit", "accounts.refund"),
            BranchPlan("order", "p:2", "orders.create", "orders.cancel")]


def saga_error_refused_by(branch: str, message: str) -> str:
    """The error text a compensated saga carries when ``branch`` refuses (the engine's own,
    as the coordinator that created the saga drives it)."""
    rec = as_creator_drives(saga.start(new_record(gid="g", protocol=Protocol.SAGA,
                                                  plan=tuple(_plan()), now=0, timeout_s=8), 0).record)
    if branch == "order":
        rec = saga.apply(rec, Answered("debit", Op.EXECUTE, True), 0).record
    rec = saga.apply(rec, Answered(branch, Op.EXECUTE, False, message=message), 0).record
    if branch == "order":
        rec = saga.apply(rec, Answered("debit", Op.COMPENSATE, True), 0).record
    assert rec.state is TxState.COMPENSATED
    return rec.error


def two_phase_error_voted_no(message: str) -> str:
    plan = tuple(BranchPlan(p.name, p.participant, p.action) for p in _plan())
    rec = two_phase.start(new_record(gid="t", protocol=Protocol.TWO_PHASE, plan=plan, now=0,
                                     timeout_s=8), 0).record
    return two_phase.apply(rec, Answered("order", Op.PREPARE, False, message=message), 0).record.error


def saga_error_gave_up() -> str:
    rec = saga.start(new_record(gid="g", protocol=Protocol.SAGA, plan=tuple(_plan()), now=0,
                                timeout_s=8), 0).record
    return saga.apply(rec, GaveUp("debit", Op.EXECUTE, "deadline exceeded", attempts=3), 0).record.error


# -- what the business would have answered --------------------------------------------------


def test_business_answers_follow_the_services_rules_in_plan_order() -> None:
    plan = [Transfer("t1", "a", 60), Transfer("t2", "a", 50),  # 100 - 60 leaves 40 < 50
            Transfer("t3", "a", 40), Transfer("t4", "b", STOCKOUT),
            Transfer("t5", "nobody", 1), Transfer("t6", "b", 10_000)]
    answers = business_answers(plan, {"a": 100, "b": 1_000})
    assert answers == {"t1": "ok", "t2": INSUFFICIENT_FUNDS, "t3": "ok", "t4": OUT_OF_STOCK,
                       "t5": INSUFFICIENT_FUNDS, "t6": INSUFFICIENT_FUNDS}


def test_a_refused_transfer_leaves_the_balance_alone() -> None:
    plan = [Transfer("t1", "a", STOCKOUT), Transfer("t2", "a", 100 - 1)]
    assert business_answers(plan, {"a": 100})["t2"] == "ok"  # the stock-out debited nothing


# -- one transfer's verdict ------------------------------------------------------------------


@pytest.mark.parametrize("branch,message", [("debit", INSUFFICIENT_FUNDS), ("order", OUT_OF_STOCK)])
def test_a_saga_refused_by_the_business_is_served(branch: str, message: str) -> None:
    detail = saga_error_refused_by(branch, message)
    assert refusal_in(detail) == message
    assert verdict("failed", detail, expected=message) == "refused"


def test_a_2pc_voted_no_by_the_business_is_served() -> None:
    detail = two_phase_error_voted_no(OUT_OF_STOCK)
    assert verdict("failed", detail, expected=OUT_OF_STOCK) == "refused"


def test_the_none_clients_order_refusal_is_the_business_answer() -> None:
    assert verdict("failed", f"order refused after the debit: {OUT_OF_STOCK}", OUT_OF_STOCK) == "refused"


@pytest.mark.parametrize("detail,why", [
    ("refused: coordinator at capacity", "capacity"),
    ("branch debit did not vote: busy: 10 prepares in flight here", "capacity"),
    (saga_error_gave_up(), "deadline"),
    ("saga deadline exceeded", "deadline"),
    ("branch order: participant unreachable", "unreachable"),
    ("branch debit did not vote: rows locked by another transaction for 0.5s", "locked"),
    ("order failed after the debit: OperationalError", "other"),
])
def test_failures_that_are_not_the_business_are_the_faults(detail: str, why: str) -> None:
    assert verdict("failed", detail, expected="ok") == "fault"
    assert cause(detail) == why


def test_unknown_is_unknown_whatever_the_business_would_say() -> None:
    assert verdict("unknown", "DEADLINE_EXCEEDED", expected="ok") == "unknown"
    assert verdict("unknown", "UNAVAILABLE", expected=OUT_OF_STOCK) == "unknown"
    assert cause("DEADLINE_EXCEEDED") == "deadline"
    assert cause("UNAVAILABLE") == "unreachable"
    assert cause("no answer in time") == "deadline"


def test_an_answer_the_business_would_not_give_is_wrong() -> None:
    assert verdict("ok", "", expected=INSUFFICIENT_FUNDS) == "wrong"
    assert verdict("failed", saga_error_refused_by("order", OUT_OF_STOCK), expected="ok") == "wrong"
    assert verdict("failed", saga_error_refused_by("debit", INSUFFICIENT_FUNDS),
                   expected=OUT_OF_STOCK) == "wrong"
    assert verdict("ok", "", expected="ok") == "ok"


# -- a mode's tally ------------------------------------------------------------------------------


def test_tally_splits_served_from_what_the_faults_cost() -> None:
    expected = {"a": "ok", "b": OUT_OF_STOCK, "c": "ok", "d": "ok", "e": "ok", "f": "ok",
                "g": INSUFFICIENT_FUNDS}
    answers = [Answer("a", "ok", ""),
               Answer("b", "failed", saga_error_refused_by("order", OUT_OF_STOCK)),
               Answer("c", "failed", "refused: coordinator at capacity"),
               Answer("d", "unknown", "DEADLINE_EXCEEDED"),
               Answer("e", "unknown", "UNAVAILABLE"),
               Answer("f", "failed", saga_error_gave_up()),
               Answer("g", "ok", "")]
    s = tally(answers, expected)
    assert (s.issued, s.served, s.ok, s.refused) == (7, 2, 1, 1)
    assert (s.failed_by_fault, s.unknown, s.wrong) == (2, 2, 1)
    assert s.served + s.failed_by_fault + s.unknown + s.wrong == s.issued
    assert s.causes == {"failed: capacity": 1, "failed: deadline": 1, "unknown: deadline": 1,
                        "unknown: unreachable": 1}
    row = s.to_dict()
    assert row["served_fraction"] == pytest.approx(2 / 7)
    assert row["unknown_fraction"] == pytest.approx(2 / 7)
    assert row["failed_by_fault_fraction"] == pytest.approx(2 / 7)


def test_tally_of_nothing_has_no_shares() -> None:
    s = tally([], {})
    assert s.issued == 0 and s.to_dict()["served_fraction"] is None


# -- the client's mapping of replies and errors ------------------------------------------------


def test_capacity_is_a_failure_by_the_fault_and_other_errors_are_unknown() -> None:
    told, detail = told_for(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert told == "failed" and verdict(told, detail, "ok") == "fault" and cause(detail) == "capacity"
    for code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE,
                 grpc.StatusCode.INTERNAL):
        assert told_for(code) == ("unknown", code.name)


def test_a_reply_is_told_by_its_state() -> None:
    assert verdict_of(pb.Transaction(state=pb.TX_STATE_COMMITTED)) == ("ok", "")
    error = saga_error_refused_by("debit", INSUFFICIENT_FUNDS)
    assert verdict_of(pb.Transaction(state=pb.TX_STATE_COMPENSATED, error=error)) == ("failed", error)
    assert verdict_of(pb.Transaction(state=pb.TX_STATE_ABORTED, error="x")) == ("failed", "x")
    told, detail = verdict_of(pb.Transaction(state=pb.TX_STATE_RUNNING))
    assert told == "unknown" and "TX_STATE_RUNNING" in detail and cause(detail) == "deadline"
