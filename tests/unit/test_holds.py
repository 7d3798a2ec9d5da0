"""Participant holds and transaction pauses: the domain rules, then the driver on the
in-memory log (no call to a held participant, deadlines that stand still, resumption)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from coordinator.domain import holds, saga, two_phase
from coordinator.domain.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from coordinator.domain.events import DeadlinePassed
from coordinator.domain.records import BranchPlan, BranchState, Protocol, TxRecord, TxState, new_record
from coordinator.domain.validation import Limits
from coordinator.engine import CoordinatorCore, Driver, EngineOptions, ListQuery, StartRequest
from coordinator.log import MemoryLog, MemoryStore
from coordinator.log._codec import decode, encode
from tests.unit.test_driver import FAST, ScriptedParticipant, saga_record, settle

FAST_HOLDS = EngineOptions(hold_poll_s=0.05, hold_resume_per_s=1000)


def test_a_hold_freezes_the_deadline_and_its_release_moves_it_by_the_time_held() -> None:
    record = saga_record("d1", timeout_s=10)
    waiting = holds.wait_on(record, "p:1", now=record.created_at + 2)
    assert holds.frozen(waiting) and waiting.waiting_on == ("p:1",)
    assert saga.deadline(waiting) is None
    assert saga.apply(waiting, DeadlinePassed(), record.created_at + 60).record is waiting
    back = holds.released(waiting, "p:1", None, now=record.created_at + 7)
    assert not holds.frozen(back) and back.waiting_on == ()
    assert back.deadline == pytest.approx(record.deadline + 5)
    assert back.deadline_moved_s == pytest.approx(5)
    assert back.history[-1].action == "hold released"


def test_two_holds_and_a_pause_freeze_once_and_thaw_when_the_last_ends() -> None:
    record = saga_record("d2", timeout_s=10)
    t0 = record.created_at
    r = holds.wait_on(record, "p:1", t0 + 1)
    r = holds.wait_on(r, "p:2", t0 + 2)
    r = holds.pause(r, "operator:ann", "look first", t0 + 3).record
    r = holds.released(r, "p:1", None, t0 + 4)
    r = holds.released(r, "p:2", None, t0 + 5)
    assert holds.frozen(r)  # still paused
    r = holds.resume(r, "operator:ann", "done", t0 + 9)
    assert not holds.frozen(r) and r.paused is None
    assert r.deadline == pytest.approx(record.deadline + 8)  # frozen from t0+1 to t0+9
    assert [h.action for h in r.history[-2:]] == ["hold released", "resume"]


def test_pause_refuses_what_the_state_forbids() -> None:
    record = saga_record("d3")
    with pytest.raises(FailedPrecondition):
        holds.pause(replace(record, state=TxState.COMMITTED), "a", "r", 1.0)
    paused = holds.pause(record, "a", "r", 1.0).record
    with pytest.raises(FailedPrecondition, match="paused already"):
        holds.pause(paused, "a", "r", 2.0)
    with pytest.raises(FailedPrecondition, match="not paused"):
        holds.resume(record, "a", "r", 2.0)


def test_a_paused_two_phase_counts_its_prepared_branches() -> None:
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do") for n in ("a", "b"))
    record = new_record(gid="t", protocol=Protocol.TWO_PHASE, plan=plan, now=1.0, timeout_s=5)
    record = record.with_branch("a", replace(record.status("a"), state=BranchState.PREPARED))
    assert holds.prepared_while_paused(record) == 0
    paused = holds.pause(record, "a", "r", 2.0).record
    assert holds.prepared_while_paused(paused) == 1
    assert two_phase.deadline(paused) is None


def test_hold_requests_are_checked_and_bounded() -> None:
    with pytest.raises(InvalidArgument, match="address"):
        holds.check_hold("no-port", "maintenance", Limits())
    with pytest.raises(InvalidArgument, match="reason"):
        holds.check_hold("p:1", " ", Limits())
    current = {f"h{i}:1": holds.Hold(f"h{i}:1", "a", "r", 1.0) for i in range(holds.MAX_HOLDS)}
    with pytest.raises(FailedPrecondition, match="release one first"):
        holds.new_hold("new:1", "a", "r", 2.0, False, current)
    again = holds.new_hold("h0:1", "b", "longer", 5.0, True, current)
    assert again.since == 1.0 and again.reason == "longer" and again.refuse_starts


def test_the_codec_keeps_holds_and_pauses() -> None:
    record = holds.wait_on(saga_record("c1"), "p:1", 5.0)
    record = holds.pause(record, "operator:ann", "why", 6.0).record
    back = decode(encode(record))
    assert (back.frozen_since, back.waiting_on, back.paused) == (5.0, ("p:1",), record.paused)


# -- the driver -------------------------------------------------------------------------

async def core_on(store: MemoryStore, owner: str,
                  p: ScriptedParticipant) -> tuple[MemoryLog, Driver, CoordinatorCore]:
    log = MemoryLog(store, owner)
    await log.open()
    driver = Driver(log, p, FAST_HOLDS)
    driver.holds.start()
    return log, driver, CoordinatorCore(log, driver)


def start_request(gid: str, protocol: Protocol, timeout_s: float) -> StartRequest:
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", f"{n}.undo" if protocol is Protocol.SAGA else "",
                            retry=FAST) for n in ("a", "b"))
    return StartRequest(gid=gid, protocol=protocol, plan=plan, timeout_s=timeout_s)


async def stored_record(log: MemoryLog, gid: str) -> TxRecord:
    stored = log.store.records[gid]
    return stored.record


@pytest.mark.parametrize("protocol", [Protocol.SAGA, Protocol.TWO_PHASE])
async def test_a_held_participant_gets_no_call_and_its_transactions_outlive_their_deadline(
        protocol: Protocol) -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log, driver, core = await core_on(store, "A", p)
    await core.hold("p:1", "operator:ann", "maintenance", refuse_starts=False)
    await core.start(start_request("h1", protocol, timeout_s=0.3))
    await asyncio.sleep(0.8)  # well past its deadline
    assert p.calls == []
    record = await stored_record(log, "h1")
    assert record.waiting_on == ("p:1",) and not record.state.settled
    assert [(h.address, n) for h, n in await core.list_holds()] == [("p:1", 1)]
    await core.release("p:1", "operator:ann", "back")
    assert await settle(log, "h1") is TxState.COMMITTED
    record = await stored_record(log, "h1")
    assert record.deadline_moved_s >= 0.7
    assert "hold released" in [h.action for h in record.history]
    await driver.holds.stop()


async def test_a_hold_may_refuse_new_starts_naming_it() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    _, driver, core = await core_on(store, "A", p)
    await core.hold("p:1", "operator:ann", "migrating the accounts db", refuse_starts=True)
    with pytest.raises(Unavailable, match="p:1 is held by operator:ann"):
        await core.start(start_request("r1", Protocol.SAGA, timeout_s=5))
    with pytest.raises(NotFound):
        await core.release("p:9", "operator:ann", "not held")
    await driver.holds.stop()


async def test_a_hold_set_through_one_coordinator_holds_another_and_survives_a_takeover() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    _, driver_a, core_a = await core_on(store, "A", p)
    log_b, driver_b, core_b = await core_on(store, "B", p)
    await core_b.hold("p:1", "operator:ann", "maintenance", refuse_starts=False)
    await asyncio.sleep(0.2)  # A's poll reads it
    await core_a.start(start_request("t1", Protocol.SAGA, timeout_s=0.3))
    await asyncio.sleep(0.4)
    assert p.calls == []
    store.expire("A")  # A is gone: B takes its transaction over, still held
    await driver_a.holds.stop()
    for stored in await log_b.claim_orphans():
        driver_b.adopt(stored, log_b.lease_epoch)
    await asyncio.sleep(0.5)
    assert p.calls == [] and not (await stored_record(log_b, "t1")).state.settled
    await core_b.release("p:1", "operator:ann", "back")
    assert await settle(log_b, "t1") is TxState.COMMITTED
    assert (await stored_record(log_b, "t1")).deadline_moved_s >= 0.5
    await driver_b.holds.stop()


async def test_pause_stops_driving_and_resume_moves_the_deadline() -> None:
    gate = asyncio.Event()
    store, p = MemoryStore(), ScriptedParticipant(gates={("a", "execute"): gate})
    log, driver, core = await core_on(store, "A", p)
    await core.start(start_request("p1", Protocol.SAGA, timeout_s=0.5))
    await asyncio.sleep(0.05)
    await core.pause("p1", "operator:ann", "investigating")
    gate.set()  # the call in flight ends; b is not called while paused
    await asyncio.sleep(0.8)
    record = await stored_record(log, "p1")
    assert record.paused is not None and record.state is TxState.RUNNING
    assert [key for key, _ in p.calls] == ["p1/a/execute"]
    await core.resume("p1", "operator:ann", "all clear")
    assert await settle(log, "p1") is TxState.COMMITTED
    record = await stored_record(log, "p1")
    assert record.deadline_moved_s >= 0.7
    assert [h.action for h in record.history if h.action in ("pause", "resume")] == ["pause", "resume"]
    await driver.holds.stop()


async def test_list_by_participant() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log, driver, core = await core_on(store, "A", p)
    await core.start(start_request("l1", Protocol.SAGA, timeout_s=5))
    other = replace(start_request("l2", Protocol.SAGA, timeout_s=5),
                    plan=(BranchPlan("x", "q:2", "x.do", retry=FAST),))
    await core.start(other)
    await settle(log, "l1")
    found, _ = await core.list(ListQuery(participant="q:2"))
    assert [s.record.gid for s in found] == ["l2"]
    with pytest.raises(InvalidArgument, match="participant"):
        await core.list(ListQuery(participant="nope"))
    await driver.holds.stop()


async def test_release_resumes_at_the_bounded_rate() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log = MemoryLog(store, "A")
    await log.open()
    driver = Driver(log, p, EngineOptions(hold_poll_s=0.05, hold_resume_per_s=20))
    driver.holds.start()
    core = CoordinatorCore(log, driver)
    await core.hold("p:1", "operator:ann", "maintenance", refuse_starts=False)
    for i in range(10):
        await core.start(start_request(f"b{i}", Protocol.SAGA, timeout_s=30))
    await asyncio.sleep(0.2)
    released_at = time.monotonic()
    await core.release("p:1", "operator:ann", "back")
    for i in range(10):
        await settle(log, f"b{i}")
    # 10 resumptions at 20/s take at least 9 gaps of 50 ms.
    assert time.monotonic() - released_at >= 0.45
    await driver.holds.stop()


async def test_the_metrics_count_held_addresses_and_waiting_transactions() -> None:
    from prometheus_client import CollectorRegistry

    from coordinator.telemetry._metrics import PrometheusMetrics

    registry = CollectorRegistry()
    store, p = MemoryStore(), ScriptedParticipant()
    log = MemoryLog(store, "A")
    await log.open()
    driver = Driver(log, p, FAST_HOLDS, metrics=PrometheusMetrics(registry))
    driver.holds.start()
    core = CoordinatorCore(log, driver)
    await core.hold("p:1", "operator:ann", "maintenance", refuse_starts=False)
    await core.hold("q:2", "operator:ann", "maintenance", refuse_starts=False)
    for gid in ("m1", "m2"):
        await core.start(start_request(gid, Protocol.SAGA, timeout_s=30))
    await asyncio.sleep(0.1)
    assert registry.get_sample_value("txc_participants_held") == 2
    assert registry.get_sample_value("txc_transactions_waiting_on_holds") == 2
    await core.release("p:1", "operator:ann", "back")
    await settle(log, "m1")
    await settle(log, "m2")
    assert registry.get_sample_value("txc_participants_held") == 1
    assert registry.get_sample_value("txc_transactions_waiting_on_holds") == 0
    await driver.holds.stop()
