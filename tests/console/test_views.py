"""The console's page data, without HTTP: timelines rebuilt from a Transaction and its
history, the list's filters, counts and paging, and a chaos run folder read back."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from txcoord_chaos import plots, rundir

from coordinator import pb
from coordinator.console import _views as views

T0 = 1_700_000_000.0
FIXTURE = Path(__file__).parent / "fixtures" / "chaos-run"


def ts(at: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return stamp


def branch(name: str, state: int, at: float, attempts: int = 1, error: str = "") -> pb.BranchStatus:
    return pb.BranchStatus(name=name, state=state, attempts=attempts, error=error, updated_at=ts(at))


def tx(state: int, branches: list[pb.BranchStatus], history: tuple[tuple[float, str], ...] = (),
       protocol: int = pb.PROTOCOL_SAGA, gid: str = "g-1", created: float = T0) -> pb.Transaction:
    return pb.Transaction(
        gid=gid, protocol=protocol, state=state, branches=branches, created_at=ts(created),
        updated_at=ts(max([created, *(b.updated_at.seconds + b.updated_at.nanos / 1e9 for b in branches)])),
        history=[pb.HistoryEntry(at=ts(at), actor="coordinator", action=a, reason="r") for at, a in history])


def test_a_committed_saga_runs_its_branches_one_after_the_other_with_exact_times() -> None:
    line = views.timeline(tx(pb.TX_STATE_COMMITTED, [
        branch("debit", pb.BRANCH_STATE_SUCCEEDED, T0 + 0.2, attempts=3),
        branch("order", pb.BRANCH_STATE_SUCCEEDED, T0 + 0.5)]))
    (debit,), (order,) = (lane.segments for lane in line.lanes)
    assert (debit.start, debit.end, debit.attempts, debit.outcome) == (T0, T0 + 0.2, 3, "ok")
    assert order.start == pytest.approx(T0 + 0.2) and order.end == pytest.approx(T0 + 0.5)
    assert all(s.exact and not s.backward for s in (debit, order))
    assert line.turn is None and not line.approximate
    assert line.pct(T0) == 0 and line.pct(T0 + 0.5) == 100


def test_a_compensated_saga_draws_its_compensation_after_the_forward_work() -> None:
    line = views.timeline(tx(pb.TX_STATE_COMPENSATED, [
        branch("debit", pb.BRANCH_STATE_COMPENSATED, T0 + 0.9),
        branch("order", pb.BRANCH_STATE_FAILED, T0 + 0.4, error="out of stock")],
        history=((T0 + 0.4, "compensate"),)))
    debit, order = line.lanes
    forward, undo = debit.segments
    assert not forward.exact and forward.attempts is None  # overwritten by the compensation
    assert T0 < forward.end < T0 + 0.4
    assert order.segments[0].outcome == "failed" and order.segments[0].end == pytest.approx(T0 + 0.4)
    assert not order.segments[0].exact  # its start is the debit's unknown end
    assert order.error == "out of stock"
    assert undo.backward and undo.op == "compensation" and undo.outcome == "undone"
    assert undo.start == pytest.approx(T0 + 0.4) and undo.end == pytest.approx(T0 + 0.9)
    assert line.turn == pytest.approx(T0 + 0.4) and line.approximate
    assert [m.action for m in line.markers] == ["compensate"]


def test_a_null_compensation_is_shown_as_one() -> None:
    nothing_undone = branch("order", pb.BRANCH_STATE_COMPENSATED, T0 + 0.6)
    nothing_undone.null_compensation = True  # its action never ran at the participant
    line = views.timeline(tx(pb.TX_STATE_COMPENSATED, [
        branch("debit", pb.BRANCH_STATE_COMPENSATED, T0 + 0.9), nothing_undone],
        history=((T0 + 0.4, "compensate"),)))
    debit, order = line.lanes
    assert (debit.state, order.state) == ("compensated", "null compensation")
    assert order.segments[-1].state == "null compensation"


def test_compensations_run_in_reverse_plan_order() -> None:
    line = views.timeline(tx(pb.TX_STATE_COMPENSATED, [
        branch("a", pb.BRANCH_STATE_COMPENSATED, T0 + 3), branch("b", pb.BRANCH_STATE_COMPENSATED, T0 + 2),
        branch("c", pb.BRANCH_STATE_FAILED, T0 + 1)], history=((T0 + 1, "compensate"),)))
    a, b = (lane.segments[-1] for lane in line.lanes[:2])
    assert (b.start, b.end) == (pytest.approx(T0 + 1), pytest.approx(T0 + 2))
    assert (a.start, a.end) == (pytest.approx(T0 + 2), pytest.approx(T0 + 3))


def test_a_failed_saga_shows_the_stuck_compensation_as_failed_with_its_error() -> None:
    line = views.timeline(tx(pb.TX_STATE_FAILED, [
        branch("a", pb.BRANCH_STATE_COMPENSATING, T0 + 2, attempts=7, error="refund refused"),
        branch("b", pb.BRANCH_STATE_FAILED, T0 + 1)],
        history=((T0 + 1, "compensate"), (T0 + 2, "failed"))))
    undo = line.lanes[0].segments[-1]
    assert undo.outcome == "failed" and undo.attempts == 7 and not undo.open
    assert [m.action for m in line.markers] == ["compensate", "failed"]
    replayed = views.timeline(tx(pb.TX_STATE_COMPENSATED, [
        branch("a", pb.BRANCH_STATE_COMPENSATED, T0 + 9), branch("b", pb.BRANCH_STATE_FAILED, T0 + 1)],
        history=((T0 + 1, "compensate"), (T0 + 2, "failed"), (T0 + 8, "replay"))))
    assert replayed.lanes[0].segments[-1].start == pytest.approx(T0 + 8)  # from the replay on
    assert replayed.labelled(replayed.lanes[1]) == [True]  # narrow, but the lane's only bar


def test_the_actions_offered_are_those_the_operator_rules_allow() -> None:
    failed_saga = tx(pb.TX_STATE_FAILED, [
        branch("a", pb.BRANCH_STATE_COMPENSATING, T0 + 2), branch("b", pb.BRANCH_STATE_FAILED, T0 + 1)])
    # no abort on a FAILED saga, and skip names only the branch it may mark done
    assert views.actions(failed_saga) == ["replay", "skip"]
    assert views.skippable(failed_saga) == ["a"]
    refused_only = tx(pb.TX_STATE_FAILED, [branch("b", pb.BRANCH_STATE_FAILED, T0 + 1)])
    assert views.actions(refused_only) == ["replay"]  # no skip on a FAILED branch
    running = tx(pb.TX_STATE_RUNNING, [branch("a", pb.BRANCH_STATE_RUNNING, T0 + 1)])
    assert views.actions(running) == ["replay", "skip", "abort", "pause"]
    running.paused.actor = "operator:ann"
    assert views.actions(running) == ["replay", "skip", "abort", "resume"]  # paused: resume
    aborting = two_phase_aborting()
    assert views.actions(aborting) == ["replay", "skip", "pause"]  # decided: no second abort
    failed_commit = tx(pb.TX_STATE_FAILED, [branch("a", pb.BRANCH_STATE_PREPARED, T0 + 1)],
                       protocol=pb.PROTOCOL_TWO_PHASE)
    failed_commit.decision = "commit"
    assert views.actions(failed_commit) == ["replay", "skip"]
    preparing = tx(pb.TX_STATE_PREPARING, [branch("a", pb.BRANCH_STATE_RUNNING, T0 + 1)],
                   protocol=pb.PROTOCOL_TWO_PHASE)
    assert views.actions(preparing) == ["replay", "skip", "abort", "pause"]
    assert views.actions(tx(pb.TX_STATE_COMPENSATED, [])) == []


def two_phase_aborting() -> pb.Transaction:
    """b voted no at +0.3, a's Prepare never answered: the Abort is being sent to a."""
    t = tx(pb.TX_STATE_ABORTING, [
        branch("a", pb.BRANCH_STATE_RUNNING, T0 + 2, attempts=3, error="UNAVAILABLE"),
        branch("b", pb.BRANCH_STATE_VOTED_NO, T0 + 0.3)],
        history=((T0 + 0.3, "decide"),), protocol=pb.PROTOCOL_TWO_PHASE)
    t.decision = "abort"
    return t


def test_a_two_phase_aborting_shows_no_branch_running() -> None:
    line = views.timeline(two_phase_aborting(), now=T0 + 3)
    lane = line.lanes[0]
    assert lane.state == "aborting"
    prepare, abort = lane.segments
    assert (prepare.state, prepare.outcome, prepare.end) == ("no vote", "failed", T0 + 0.3)
    assert not prepare.open
    assert (abort.op, abort.state, abort.start, abort.attempts) == ("abort", "aborting", T0 + 0.3, 3)
    assert abort.open and abort.end == T0 + 3


def test_two_phase_prepares_at_once_then_commits_after_the_decision() -> None:
    line = views.timeline(tx(pb.TX_STATE_COMMITTED, [
        branch("a", pb.BRANCH_STATE_COMMITTED, T0 + 0.6), branch("b", pb.BRANCH_STATE_COMMITTED, T0 + 0.7)],
        history=((T0 + 0.3, "decide"),), protocol=pb.PROTOCOL_TWO_PHASE))
    for lane in line.lanes:
        prepare, commit = lane.segments
        assert prepare.op == "prepare" and prepare.start == T0
        assert commit.op == "commit" and commit.start == pytest.approx(T0 + 0.3)
        assert prepare.end <= commit.start


def test_a_running_saga_stretches_to_now_and_pending_branches_have_no_bar() -> None:
    line = views.timeline(tx(pb.TX_STATE_RUNNING, [
        branch("a", pb.BRANCH_STATE_RUNNING, T0 + 1), branch("b", pb.BRANCH_STATE_PENDING, T0)]),
        now=T0 + 5)
    assert line.end == T0 + 5 and line.lanes[0].segments[0].open
    assert line.lanes[0].segments[0].end == T0 + 5 and line.lanes[1].segments == []


def test_filters_are_checked_like_the_cli_flags() -> None:
    f = views.parse_filters({"state": ["failed", "Running"], "protocol": ["2pc"], "label": ["team=pay"],
                             "gid_prefix": ["shop-"], "older_than": ["10m"], "page": ["2"]})
    assert f.states == ("failed", "running") and f.labels == (("team", "pay"),) and f.page == 2
    assert f.where().protocol == pb.PROTOCOL_TWO_PHASE and f.where().gid_prefix == "shop-"
    assert "page=3" in f.query(page=3) and "state=failed" in f.query()
    for bad, says in [({"state": ["stuck"]}, "unknown state"), ({"protocol": ["xa"]}, "protocol"),
                      ({"label": ["nolabel"]}, "KEY=VALUE"), ({"older_than": ["soon"]}, "duration"),
                      ({"page": ["0"]}, "page")]:
        with pytest.raises(views.FilterError, match=says):
            views.parse_filters(bad)


def test_list_is_newest_first_paged_and_counts_states_before_the_state_filter() -> None:
    txs = [tx(pb.TX_STATE_FAILED if i % 10 == 0 else pb.TX_STATE_COMMITTED, [], gid=f"g-{i:03}",
              created=T0 + i) for i in range(120)]
    page = views.list_page(txs, views.Filters(page=2), now=T0 + 200)
    assert page.total == 120 and page.pages == 3 and page.page == 2
    assert page.rows[0].gid == "g-069"  # 50 newest on page 1: g-119 .. g-070
    assert page.counts["failed"] == 12 and page.counts["committed"] == 108
    failed = views.list_page(txs, views.Filters(states=("failed",)), now=T0 + 200)
    assert [r.gid for r in failed.rows][:2] == ["g-110", "g-100"] and failed.counts["committed"] == 108
    old = views.list_page(txs, views.Filters(older_than="150s"), now=T0 + 200)
    assert old.total == 51  # created at or before T0 + 50


def test_a_chaos_run_folder_reads_back_per_mode() -> None:
    run = rundir.load(FIXTURE)
    assert set(run.modes) == {"none", "saga"} and run.status in ("ok", "dirty")
    saga = run.modes["saga"]
    assert len(saga.calls) == run.rows()["saga"]["issued"]
    assert saga.reads and saga.ttc_s and saga.faults
    assert all(" " in f.label for f in saga.faults)  # "kind target"
    assert not run.modes["none"].ttc_s  # no coordinator to ask
    assert rundir.runs_under(FIXTURE.parent) == [FIXTURE]


def test_every_plot_of_a_run_is_a_png() -> None:
    run = rundir.load(FIXTURE)
    for draw in plots.DRAW.values():
        assert draw(run).startswith(b"\x89PNG")
    empty = rundir.RunData("empty", {"status": "failed", "modes": {}}, {})
    assert plots.timeline(empty).startswith(b"\x89PNG")


def test_the_console_refuses_plain_http_off_loopback() -> None:
    from coordinator.cli._console import listen_refusal

    assert listen_refusal("127.0.0.1", tls=False, insecure=False) is None
    assert listen_refusal("::1", tls=False, insecure=False) is None
    assert listen_refusal("localhost", tls=False, insecure=False) is None
    assert "refusing" in (listen_refusal("0.0.0.0", tls=False, insecure=False) or "")
    assert "refusing" in (listen_refusal("console.example", tls=False, insecure=False) or "")
    assert listen_refusal("0.0.0.0", tls=True, insecure=False) is None
    assert listen_refusal("10.0.0.5", tls=False, insecure=True) is None


def test_a_trace_links_only_with_a_template_and_a_well_formed_id() -> None:
    jaeger = "http://localhost:16686/trace/{trace_id}"
    trace = "0af7651916cd43dd8448eb211c80319c"
    assert views.trace_link(jaeger, trace) == f"http://localhost:16686/trace/{trace}"
    assert views.trace_link("", trace) == ""
    assert views.trace_link(jaeger, "") == ""
    assert views.trace_link(jaeger, "x/../../admin" + "0" * 19) == ""
