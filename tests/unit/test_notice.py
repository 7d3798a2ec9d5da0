"""The settlement's notice: its pure rules, its checks, its storage, and the driver
delivering it on the in-memory log (retries, budget, refusal, takeover, a second
settlement after an operator's replay)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pytest
from prometheus_client import CollectorRegistry

from coordinator._proto.txc.v1 import coordinator_pb2 as pb
from coordinator.domain import notice, operator
from coordinator.domain.addresses import AllowList
from coordinator.domain.errors import InvalidArgument
from coordinator.domain.records import (
    BranchPlan,
    NoticeState,
    NotifyPlan,
    Protocol,
    RetryPolicy,
    TxRecord,
    TxState,
    idempotency_key,
    new_record,
)
from coordinator.domain.validation import Limits, check_notify
from coordinator.engine import Answer, Driver, Kind, Recovery
from coordinator.log import MemoryLog, MemoryStore
from coordinator.log._codec import decode, encode
from coordinator.rpc._plans import check_saga_request, notify_of
from coordinator.telemetry._metrics import PrometheusMetrics
from tests.unit.test_driver import FAST, ScriptedParticipant, new_driver

TARGET = NotifyPlan("events:9", "orders.settled", retry=FAST, budget_s=30.0)


def record(gid: str, notify: NotifyPlan | None = TARGET, retry: RetryPolicy = FAST) -> TxRecord:
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", f"{n}.undo", retry=retry, compensation_retry=retry)
                 for n in ("a", "b"))
    return new_record(gid=gid, protocol=Protocol.SAGA, plan=plan, now=time.time(),
                      timeout_s=30.0, notify=notify)


@dataclass
class Receiver(ScriptedParticipant):
    """Also keeps what each notice call carried (the settled Transaction)."""

    told: list[tuple[str, str, pb.Transaction]] = field(default_factory=list)

    async def call(self, gid: str, plan: BranchPlan, op: str, attempt: int,
                   trace: Mapping[str, str], action_result: bytes = b"") -> Answer:
        if plan.name.startswith("/"):
            self.told.append((idempotency_key(gid, plan.name, op), plan.action,
                              pb.Transaction.FromString(plan.payload)))
        return await super().call(gid, plan, op, attempt, trace)


async def finished(log: MemoryLog, gid: str, within: float = 5.0) -> TxRecord:
    end = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < end:
        stored = log.store.records.get(gid)
        if stored and stored.record.finished:
            return stored.record
        await asyncio.sleep(0.005)
    raise AssertionError(f"{gid} did not finish")


# -- pure rules ----------------------------------------------------------------------

def test_a_settlement_arms_the_notice_and_a_resumption_supersedes_it() -> None:
    running = record("g")
    committed = replace(running, state=TxState.COMMITTED)
    armed = notice.arm(running, committed, 10.0)
    assert armed.notice.state is NoticeState.PENDING and armed.notice.generation == 1
    assert armed.notice.started_at == 10.0 and not armed.finished
    assert armed.history[-1].action == "notify sent"
    assert notice.arm(armed, armed, 11.0) is armed  # still COMMITTED: nothing new

    failed = notice.arm(running, replace(running, state=TxState.FAILED), 10.0)
    resumed = notice.arm(failed, replace(failed, state=TxState.COMPENSATING), 12.0)
    assert resumed.notice.state is NoticeState.SUPERSEDED and resumed.history[-1].action == \
        "notify superseded"
    again = notice.arm(resumed, replace(resumed, state=TxState.COMPENSATED), 13.0)
    assert again.notice.generation == 2
    assert notice.call_plan(again, b"tx").name == "/notify/2"
    assert idempotency_key("g", notice.branch_of(2), "execute") == "g/notify/2"
    assert idempotency_key("g", notice.branch_of(1), "execute") == "g/notify"


def test_without_a_target_nothing_is_armed() -> None:
    running = record("g", notify=None)
    committed = replace(running, state=TxState.COMMITTED)
    assert notice.arm(running, committed, 1.0) is committed and committed.finished


def test_an_outcome_for_another_generation_changes_nothing() -> None:
    running = record("g")
    armed = notice.arm(running, replace(running, state=TxState.FAILED), 1.0)
    assert notice.acknowledged(armed, 2, 1, 2.0) is armed
    done = notice.acknowledged(armed, 1, 3, 2.0)
    assert done.notice.state is NoticeState.ACKNOWLEDGED and done.notice.attempts == 3
    assert done.finished and notice.gave_up(done, 1, 1, "late", 3.0) is done


@pytest.mark.parametrize(("target", "field_name"), [
    (NotifyPlan("", "x"), "notify.participant"),
    (NotifyPlan("no-port", "x"), "notify.participant"),
    (NotifyPlan("evil:1", "x"), "notify.participant"),
    (NotifyPlan("events:9", ""), "notify.operation"),
    (NotifyPlan("events:9", "x\n"), "notify.operation"),
    (NotifyPlan("events:9", "x", budget_s=8 * 86400), "notify.budget"),
    (NotifyPlan("events:9", "x", timeout_s=601), "notify.timeout"),
    (NotifyPlan("events:9", "x", retry=RetryPolicy(multiplier=0.5)), "notify.retry.multiplier"),
])
def test_bad_targets_are_refused_naming_the_field(target: NotifyPlan, field_name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_notify(target, Limits(), AllowList(("events:*",)))
    assert refused.value.field == field_name


def test_a_start_request_reads_its_target_with_defaults_and_names_bad_durations() -> None:
    msg = pb.StartSagaRequest(notify=pb.Notify(participant="events:9", operation="o"))
    assert notify_of(msg) == NotifyPlan("events:9", "o", budget_s=3600.0, timeout_s=5.0)
    assert notify_of(pb.StartSagaRequest()) is None
    msg.notify.budget.seconds = -1
    with pytest.raises(InvalidArgument) as refused:
        notify_of(msg)
    assert refused.value.field == "notify.budget"


def test_the_log_keeps_target_and_notice() -> None:
    running = record("g")
    armed = notice.arm(running, replace(running, state=TxState.COMMITTED), 5.0)
    assert decode(encode(armed)) == replace(armed, plan=tuple(replace(p, payload=b"")
                                                              for p in armed.plan))
    assert "notify" not in encode(record("h", notify=None)).decode()


def test_a_different_target_is_a_different_plan() -> None:
    assert not record("g").same_plan(record("g", notify=replace(TARGET, operation="other")))
    assert record("g").same_plan(record("g"))


# -- the driver ----------------------------------------------------------------------

async def test_a_commit_is_noticed_once_with_the_settled_transaction() -> None:
    store, p = MemoryStore(), Receiver()
    log, driver = await new_driver(store, "A", p)
    await driver.start(record("n1"))
    done = await finished(log, "n1")
    assert done.state is TxState.COMMITTED and done.notice.state is NoticeState.ACKNOWLEDGED
    assert [(k, op) for k, op, _ in p.told] == [("n1/notify", "orders.settled")]
    tx = p.told[0][2]
    assert tx.gid == "n1" and tx.state == pb.TX_STATE_COMMITTED
    assert tx.notice.state == pb.NOTICE_STATE_PENDING and tx.notice.generation == 1
    actions = [h.action for h in done.history]
    assert actions[-2:] == ["notify sent", "notify acknowledged"]
    assert "n1" not in store.owners and driver.active == 0  # released once noticed


async def test_an_unanswered_notice_is_retried_then_acknowledged() -> None:
    store = MemoryStore()
    p = Receiver(script={("/notify", "execute"): [Kind.UNKNOWN, Kind.UNKNOWN, Kind.OK]})
    log, driver = await new_driver(store, "A", p)
    await driver.start(record("n2"))
    done = await finished(log, "n2")
    assert done.notice.state is NoticeState.ACKNOWLEDGED and done.notice.attempts == 3
    assert [c for c in p.calls if c[0] == "n2/notify"] == [("n2/notify", 1), ("n2/notify", 2),
                                                          ("n2/notify", 3)]


async def test_a_refused_notice_is_given_up_at_once_and_says_why() -> None:
    store = MemoryStore()
    p = Receiver(script={("/notify", "execute"): [Kind.FAILED]})
    log, driver = await new_driver(store, "A", p)
    await driver.start(record("n3"))
    done = await finished(log, "n3")
    assert done.state is TxState.COMMITTED and done.notice.state is NoticeState.GAVE_UP
    assert len(p.told) == 1 and "refused it" in done.notice.error
    assert done.history[-1].action == "notify given up"


async def test_a_notice_out_of_budget_is_given_up() -> None:
    store = MemoryStore()
    p = Receiver(script={("/notify", "execute"): [Kind.UNKNOWN]})
    log, driver = await new_driver(store, "A", p)
    await driver.start(record("n4", notify=replace(TARGET, budget_s=0.1)))
    done = await finished(log, "n4")
    assert done.notice.state is NoticeState.GAVE_UP
    assert "budget of 0.1 s" in done.notice.error and done.notice.attempts >= 2


async def test_a_notice_left_by_a_dead_coordinator_is_delivered_by_the_next() -> None:
    store = MemoryStore()
    gate = asyncio.Event()
    p = Receiver(gates={("/notify", "execute"): gate})
    _, driver_a = await new_driver(store, "A", p)
    await driver_a.start(record("n5"))
    while not p.told:
        await asyncio.sleep(0.001)  # settled and written; A's notice hangs
    stored = store.records["n5"].record
    assert stored.state is TxState.COMMITTED and stored.notice.state is NoticeState.PENDING
    await driver_a.stop(0)
    store.expire("A")
    log_b, driver_b = await new_driver(store, "B", p)
    assert await Recovery(log_b, driver_b, interval_s=1).scan_once() == 1
    gate.set()
    done = await finished(log_b, "n5")
    assert done.notice.state is NoticeState.ACKNOWLEDGED
    assert {k for k, _, _ in p.told} == {"n5/notify"} and len(p.told) == 2  # same key again
    assert p.effects["n5/notify"] == 1


async def test_a_replayed_failed_transaction_is_noticed_again_under_a_new_key() -> None:
    store = MemoryStore()
    p = Receiver(script={("b", "execute"): [Kind.FAILED], ("a", "compensate"): [Kind.UNKNOWN]})
    log, driver = await new_driver(store, "A", p)
    retry = RetryPolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.002)
    await driver.start(record("n6", retry=retry))
    failed = await finished(log, "n6")
    assert failed.state is TxState.FAILED and failed.notice.state is NoticeState.ACKNOWLEDGED
    p.script[("a", "compensate")] = [Kind.OK]
    stored = await log.get("n6")
    assert stored is not None
    await driver.operate(stored, lambda r, now: operator.replay(r, "ops", "fixed", now))
    done = await finished(log, "n6")
    assert done.state is TxState.COMPENSATED and done.notice.generation == 2
    assert [(k, tx.state) for k, _, tx in p.told] == [
        ("n6/notify", pb.TX_STATE_FAILED), ("n6/notify/2", pb.TX_STATE_COMPENSATED)]


async def test_an_aborted_two_phase_is_noticed_with_its_decision() -> None:
    store = MemoryStore()
    p = Receiver(script={("b", "prepare"): [Kind.FAILED]})
    log, driver = await new_driver(store, "A", p)
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", retry=FAST) for n in ("a", "b"))
    await driver.start(new_record(gid="t-n", protocol=Protocol.TWO_PHASE, plan=plan,
                                  now=time.time(), timeout_s=30, notify=TARGET))
    done = await finished(log, "t-n")
    assert done.state is TxState.ABORTED and done.notice.state is NoticeState.ACKNOWLEDGED
    ((key, _, tx),) = p.told
    assert key == "t-n/notify" and tx.state == pb.TX_STATE_ABORTED and tx.decision == "abort"


async def test_a_notice_costs_one_log_write_and_is_counted() -> None:
    """Armed in the settling write; only its end is a write of its own."""
    store, p = MemoryStore(), Receiver()
    registry = CollectorRegistry()
    log = MemoryLog(store, "A")
    await log.open()
    driver = Driver(log, p, metrics=PrometheusMetrics(registry))
    await driver.start(record("n7"))
    await finished(log, "n7")
    assert store.requests == 3  # create (b announced ahead), b done (+ armed), acknowledged
    count = registry.get_sample_value
    assert count("txc_notices_total", {"event": "sent"}) == 1
    assert count("txc_notices_total", {"event": "acknowledged"}) == 1
    assert count("txc_branch_calls_total", {"op": "notify", "outcome": "ok"}) == 1


def test_the_outbox_checks_a_saga_s_notify_target_as_the_coordinator_does() -> None:
    msg = pb.StartSagaRequest(branches=[pb.Branch(name="a", participant="p:1", action="x")],
                              notify=pb.Notify(participant="p:1"))
    with pytest.raises(InvalidArgument) as refused:
        check_saga_request(msg)
    assert refused.value.field == "notify.operation"
