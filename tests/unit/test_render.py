"""``txc tx show`` as text: where each branch lives, and states as people read them."""

from __future__ import annotations

from coordinator import pb
from coordinator.cli._render import render_show


def test_a_two_phase_aborting_shows_its_unanswered_branch_aborting_and_where_it_lives() -> None:
    tx = pb.Transaction(gid="t-1", protocol=pb.PROTOCOL_TWO_PHASE, state=pb.TX_STATE_ABORTING,
                        decision="abort", error="branch debit did not vote: UNAVAILABLE", branches=[
                            pb.BranchStatus(name="debit", state=pb.BRANCH_STATE_RUNNING,
                                            participant="accounts:7001", action="accounts.debit"),
                            pb.BranchStatus(name="order", state=pb.BRANCH_STATE_ABORTED,
                                            participant="orders:7002", action="orders.create")])
    shown = render_show(tx)
    assert "  decision: abort" in shown
    lines = shown.splitlines()
    debit = lines.index(next(line for line in lines if line.strip().startswith("debit")))
    assert lines[debit].split()[1] == "aborting"  # not "running": the Abort is being sent
    assert lines[debit + 1].strip() == "at accounts:7001, operation accounts.debit"
    assert "running" not in shown


def test_a_saga_branch_names_its_action_and_compensation() -> None:
    tx = pb.Transaction(gid="s-1", protocol=pb.PROTOCOL_SAGA, state=pb.TX_STATE_COMMITTED, branches=[
        pb.BranchStatus(name="pay", state=pb.BRANCH_STATE_SUCCEEDED, participant="pay:1",
                        action="pay.charge", compensation="pay.refund"),
        pb.BranchStatus(name="mail", state=pb.BRANCH_STATE_SUCCEEDED, participant="mail:1",
                        action="mail.send")])
    shown = render_show(tx)
    assert "at pay:1, action pay.charge, compensation pay.refund" in shown
    assert "at mail:1, action mail.send, no compensation" in shown


def test_the_notice_says_whom_how_it_ended_and_why() -> None:
    tx = pb.Transaction(gid="s-2", protocol=pb.PROTOCOL_SAGA, state=pb.TX_STATE_COMMITTED,
                        notice=pb.NoticeStatus(participant="orders:7002", operation="orders.settled",
                                               state=pb.NOTICE_STATE_GAVE_UP, generation=2,
                                               attempts=7, error="refused: unknown order"))
    assert "  notify: orders.settled at orders:7002, gave up (notice 2, 7 attempts): refused: " \
           "unknown order" in render_show(tx)
    tx.notice.Clear()
    tx.notice.participant, tx.notice.operation = "orders:7002", "orders.settled"
    assert "  notify: orders.settled at orders:7002, when settled" in render_show(tx)
    assert "notify:" not in render_show(pb.Transaction(gid="s-3"))
