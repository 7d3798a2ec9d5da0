"""The driver on the in-memory log: write-ahead, retries, budgets and takeover."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pytest

from coordinator.domain.errors import Unavailable
from coordinator.domain.records import (
    BranchPlan,
    Protocol,
    RetryPolicy,
    TxRecord,
    TxState,
    idempotency_key,
    new_record,
)
from coordinator.engine import (
    Answer,
    CoordinatorCore,
    Driver,
    EngineOptions,
    Kind,
    Recovery,
    StartRequest,
)
from coordinator.log import Created, LogError, MemoryLog, MemoryStore

FAST = RetryPolicy(max_attempts=0, initial_backoff_s=0.001, max_backoff_s=0.005)


@dataclass
class ScriptedParticipant:
    """Answers from a script per (branch, op) (last answer repeats); applies each key once."""

    script: dict[tuple[str, str], list[Kind]] = field(default_factory=dict)
    gates: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    calls: list[tuple[str, int]] = field(default_factory=list)
    effects: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    action_results: dict[str, bytes] = field(default_factory=dict)  # key -> as received

    async def call(self, gid: str, plan: BranchPlan, op: str, attempt: int,
                   trace: Mapping[str, str], action_result: bytes = b"") -> Answer:
        key = idempotency_key(gid, plan.name, op)
        self.calls.append((key, attempt))
        self.action_results[key] = action_result
        gate = self.gates.get((plan.name, op))
        if gate is not None:
            await gate.wait()
        answers = self.script.get((plan.name, op), [Kind.OK])
        kind = answers.pop(0) if len(answers) > 1 else answers[0]
        if kind is Kind.OK and self.effects[key] == 0:
            self.effects[key] += 1
        result = f"id-of-{key}".encode() if kind is Kind.OK else b""
        return Answer(kind, result, message=f"{kind.value} from script")

    async def close(self) -> None:
        return None


def saga_record(gid: str, retry: RetryPolicy = FAST, timeout_s: float = 30.0,
                compensation_retry: RetryPolicy = FAST) -> TxRecord:
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", f"{n}.undo", retry=retry,
                            compensation_retry=compensation_retry) for n in ("a", "b"))
    return new_record(gid=gid, protocol=Protocol.SAGA, plan=plan, now=time.time(),
                      timeout_s=timeout_s)


async def settle(log: MemoryLog, gid: str, within: float = 5.0) -> TxState:
    end = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < end:
        stored = log.store.records.get(gid)  # direct: polling must not count as requests
        if stored and stored.record.state.settled:
            return stored.record.state
        await asyncio.sleep(0.005)
    raise AssertionError(f"{gid} did not settle")


async def new_driver(store: MemoryStore, owner: str, p: ScriptedParticipant,
                     options: EngineOptions | None = None) -> tuple[MemoryLog, Driver]:
    log = MemoryLog(store, owner)
    await log.open()
    return log, Driver(log, p, options)


async def test_happy_path_writes_twice_for_two_branches() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log, driver = await new_driver(store, "A", p)
    await driver.start(saga_record("g1"))
    assert await settle(log, "g1") is TxState.COMMITTED
    # The create (a's intent, and b's announced ahead: domain.durability), then the end.
    assert store.requests == 2
    assert dict(p.effects) == {"g1/a/execute": 1, "g1/b/execute": 1}


async def test_a_longer_saga_still_writes_only_its_start_and_its_end() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log, driver = await new_driver(store, "A", p)
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", f"{n}.undo", retry=FAST) for n in "abcde")
    await driver.start(new_record(gid="g5", protocol=Protocol.SAGA, plan=plan, now=time.time(),
                                  timeout_s=30))
    assert await settle(log, "g5") is TxState.COMMITTED
    assert store.requests == 2
    assert [k for k, _ in p.calls] == [f"g5/{n}/execute" for n in "abcde"]  # in order


async def test_its_creator_compensates_only_the_branches_it_called() -> None:
    store = MemoryStore()
    p = ScriptedParticipant(script={("a", "execute"): [Kind.OK], ("b", "execute"): [Kind.FAILED]})
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", f"{n}.undo", retry=FAST) for n in "abc")
    log, driver = await new_driver(store, "A", p)
    await driver.start(new_record(gid="g6", protocol=Protocol.SAGA, plan=plan, now=time.time(),
                                  timeout_s=30))
    assert await settle(log, "g6") is TxState.COMPENSATED
    # c was announced at the create but never called: no null compensation for it.
    assert [k for k, _ in p.calls] == ["g6/a/execute", "g6/b/execute", "g6/a/compensate"]
    assert not store.records["g6"].record.intents_ahead  # the turn wrote what A knew


async def test_a_successor_compensates_a_branch_the_log_shows_pending() -> None:
    """A called b without writing (its intent was announced by the create), then lost its
    lease; the deadline passes. B cannot know whether b ran: it compensates b as well as a."""
    store = MemoryStore()
    p = ScriptedParticipant(gates={("b", "execute"): asyncio.Event()})  # A's call hangs
    _, driver_a = await new_driver(store, "A", p)
    await driver_a.start(saga_record("g7", timeout_s=0.3))
    while not any(k == "g7/b/execute" for k, _ in p.calls):
        await asyncio.sleep(0.001)
    logged = store.records["g7"].record
    assert logged.status("b").state.name == "PENDING" and logged.intents_ahead
    p.gates[("a", "execute")] = asyncio.Event()  # B's repeat of a hangs: b stays PENDING
    store.expire("A")
    await asyncio.sleep(0.35)  # past the deadline: B turns to compensation at once
    log_b, driver_b = await new_driver(store, "B", p)
    assert await Recovery(log_b, driver_b, interval_s=1).scan_once() == 1
    assert await settle(log_b, "g7") is TxState.COMPENSATED
    compensated = [k for k, _ in p.calls if k.endswith("/compensate")]
    assert compensated == ["g7/b/compensate", "g7/a/compensate"]  # b first: reverse order


async def test_a_concurrent_saga_writes_its_start_and_its_end() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log, driver = await new_driver(store, "A", p)
    await driver.start(replace(saga_record("g-dag"), concurrent=True))
    assert await settle(log, "g-dag") is TxState.COMMITTED
    assert store.requests == 2  # both intents in the create; a's success rides with b's


async def test_two_phase_writes_create_decision_and_end() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log, driver = await new_driver(store, "A", p)
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", retry=FAST) for n in ("a", "b"))
    await driver.start(new_record(gid="t1", protocol=Protocol.TWO_PHASE, plan=plan,
                                  now=time.time(), timeout_s=30))
    assert await settle(log, "t1") is TxState.COMMITTED
    assert store.requests == 3  # create (prepare intents), COMMITTING (the commit point), end


async def test_progress_not_yet_written_is_repeated_after_a_takeover_with_the_same_keys() -> None:
    store, p = MemoryStore(), ScriptedParticipant(gates={("b", "prepare"): asyncio.Event()})
    log_a, driver_a = await new_driver(store, "A", p)
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", retry=FAST) for n in ("a", "b"))
    await driver_a.start(new_record(gid="t-lazy", protocol=Protocol.TWO_PHASE, plan=plan,
                                    now=time.time(), timeout_s=30))
    while ("t-lazy/a/prepare", 1) not in p.calls or not p.effects["t-lazy/a/prepare"]:
        await asyncio.sleep(0.001)  # a voted yes (not written), b's prepare hangs
    assert store.records["t-lazy"].record.status("a").state.name == "RUNNING"
    await driver_a.stop(0)
    store.expire("A")  # A dies: B resumes from what the log holds
    _, driver_b = await new_driver(store, "B", p)
    p.gates[("b", "prepare")].set()
    claimed = await Recovery(MemoryLog(store, "B"), driver_b, interval_s=1).scan_once()
    assert claimed == 1
    assert await settle(log_a, "t-lazy") is TxState.COMMITTED
    assert [k for k, _ in p.calls].count("t-lazy/a/prepare") == 2  # asked again, same key
    assert p.effects["t-lazy/a/prepare"] == 1 and p.effects["t-lazy/a/commit"] == 1


@dataclass
class IntentChecking(ScriptedParticipant):
    """Notes, at every call, what the log showed for the called branch."""

    store: MemoryStore = field(default_factory=MemoryStore)
    logged: list[str] = field(default_factory=list)
    announced: list[bool] = field(default_factory=list)

    async def call(self, gid: str, plan: BranchPlan, op: str, attempt: int,
                   trace: Mapping[str, str], action_result: bytes = b"") -> Answer:
        record = self.store.records[gid].record
        self.logged.append(record.status(plan.name).state.name)
        self.announced.append(record.intents_ahead)
        return await super().call(gid, plan, op, attempt, trace, action_result)


async def test_a_first_call_is_never_made_before_its_intent_is_written() -> None:
    store = MemoryStore()
    p = IntentChecking(store=store)
    log, driver = await new_driver(store, "A", p)
    await driver.start(saga_record("g-intent"))
    assert await settle(log, "g-intent") is TxState.COMMITTED
    # a's intent written as RUNNING; b's announced by the create (a successor compensates
    # it): never PENDING in a record that a successor would take for "never ran".
    assert p.logged == ["RUNNING", "PENDING"]
    assert p.announced == [True, True]


async def test_transient_failures_are_retried_with_the_same_key() -> None:
    store = MemoryStore()
    p = ScriptedParticipant(script={("a", "execute"): [Kind.UNKNOWN, Kind.UNKNOWN, Kind.OK]})
    log, driver = await new_driver(store, "A", p)
    await driver.start(saga_record("g2"))
    assert await settle(log, "g2") is TxState.COMMITTED
    a_calls = [c for c in p.calls if c[0].startswith("g2/a/")]
    assert a_calls == [("g2/a/execute", 1), ("g2/a/execute", 2), ("g2/a/execute", 3)]
    stored = await log.get("g2")
    assert stored is not None and stored.record.status("a").attempts == 3  # the true count
    # Writes: create, the first failure (the second came within failure_write_interval_s),
    # a's success with b's intent, b's success.
    assert stored.record.seq == 4


async def test_every_failure_is_written_when_the_interval_is_zero() -> None:
    store = MemoryStore()
    p = ScriptedParticipant(script={("a", "execute"): [Kind.UNKNOWN, Kind.UNKNOWN, Kind.OK]})
    log, driver = await new_driver(store, "A", p, EngineOptions(failure_write_interval_s=0))
    await driver.start(saga_record("g2"))
    assert await settle(log, "g2") is TxState.COMMITTED
    stored = await log.get("g2")
    assert stored is not None and stored.record.status("a").attempts == 3
    assert stored.record.seq == 5  # both failures written


async def test_compensation_that_never_succeeds_fails_the_saga_after_its_budget() -> None:
    store = MemoryStore()
    p = ScriptedParticipant(script={("b", "execute"): [Kind.FAILED],
                                    ("a", "compensate"): [Kind.UNKNOWN]})
    log, driver = await new_driver(store, "A", p)
    capped = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)
    await driver.start(saga_record("g3", compensation_retry=capped))
    assert await settle(log, "g3") is TxState.FAILED
    stored = await log.get("g3")
    assert stored is not None
    assert "exhausted" in stored.record.error
    assert len([c for c in p.calls if c[0] == "g3/a/compensate"]) == 3
    assert driver.active == 0  # settled transactions leave memory


async def test_the_actions_attempt_cap_does_not_cap_its_compensation() -> None:
    store = MemoryStore()
    p = ScriptedParticipant(script={("b", "execute"): [Kind.FAILED],
                                    ("a", "compensate"): [Kind.UNKNOWN] * 6 + [Kind.OK]})
    log, driver = await new_driver(store, "A", p)
    three = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)
    await driver.start(saga_record("g3b", three))
    assert await settle(log, "g3b") is TxState.COMPENSATED
    assert len([c for c in p.calls if c[0] == "g3b/a/compensate"]) == 7


async def test_a_compensation_is_sent_the_result_its_action_answered_ok_with() -> None:
    store = MemoryStore()
    p = ScriptedParticipant(script={("b", "execute"): [Kind.UNKNOWN]})  # b: outcome unknown
    log, driver = await new_driver(store, "A", p)
    await driver.start(saga_record("g-res", timeout_s=0.5))
    assert await settle(log, "g-res") is TxState.COMPENSATED
    assert p.action_results["g-res/a/compensate"] == b"id-of-g-res/a/execute"
    assert p.action_results["g-res/b/compensate"] == b""  # never answered OK
    assert p.action_results["g-res/a/execute"] == b""  # only compensations carry it


async def test_the_actions_attempt_cap_does_not_cap_2pc_phase_two() -> None:
    store = MemoryStore()
    p = ScriptedParticipant(script={("a", "commit"): [Kind.UNKNOWN] * 5 + [Kind.OK]})
    log, driver = await new_driver(store, "A", p)
    three = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)
    plan = tuple(BranchPlan(n, "p:1", f"{n}.do", retry=three, compensation_retry=FAST)
                 for n in ("a", "b"))
    await driver.start(new_record(gid="t-owed", protocol=Protocol.TWO_PHASE, plan=plan,
                                  now=time.time(), timeout_s=30))
    assert await settle(log, "t-owed") is TxState.COMMITTED
    assert len([c for c in p.calls if c[0] == "t-owed/a/commit"]) == 6


async def test_takeover_finishes_the_saga_with_each_effect_once() -> None:
    store = MemoryStore()
    gate = asyncio.Event()
    p = ScriptedParticipant(gates={("b", "execute"): gate})
    _, driver_a = await new_driver(store, "A", p)
    await driver_a.start(saga_record("g4"))
    while not any(c[0] == "g4/b/execute" for c in p.calls):
        await asyncio.sleep(0.001)
    store.expire("A")  # A's lease runs out while its call to b hangs
    log_b, driver_b = await new_driver(store, "B", p)
    assert await Recovery(log_b, driver_b, interval_s=1).scan_once() == 1
    gate.set()  # both A's and B's calls to b now answer
    assert await settle(log_b, "g4") is TxState.COMMITTED
    await asyncio.sleep(0.05)
    assert driver_a.active == 0  # A found it lost ownership and let go
    assert {k for k, _ in p.calls if "/b/" in k} == {"g4/b/execute"}
    assert dict(p.effects) == {"g4/a/execute": 1, "g4/b/execute": 1}


class LostReplyLog(MemoryLog):
    """The store applies the first create, then the reply is lost (the request timed out)."""

    lose_next = True

    async def create(self, record: TxRecord) -> Created:
        created = await super().create(record)
        if self.lose_next:
            self.lose_next = False
            raise LogError("etcd: deadline exceeded")
        return created


async def test_a_create_whose_reply_was_lost_is_driven_by_the_next_scan() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log = LostReplyLog(store, "A")
    await log.open()
    driver = Driver(log, p)
    with pytest.raises(LogError):
        await driver.start(saga_record("lost"))
    assert store.owners["lost"] == "A" and not driver.owns("lost")  # owned, yet undriven
    assert await Recovery(log, driver, interval_s=1).scan_once() == 0  # no orphan: adopted
    assert await settle(log, "lost") is TxState.COMMITTED
    assert dict(p.effects) == {"lost/a/execute": 1, "lost/b/execute": 1}


async def test_the_scan_leaves_a_transaction_being_created_alone() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log, driver = await new_driver(store, "A", p)
    started = asyncio.ensure_future(driver.start(saga_record("fresh")))
    await asyncio.sleep(0)  # the record is in the store, the driver has not resumed yet
    await Recovery(log, driver, interval_s=1).scan_once()
    await started
    assert await settle(log, "fresh") is TxState.COMMITTED
    assert [c for c, _ in p.calls].count("fresh/a/execute") == 1


async def test_work_held_under_a_lease_that_ended_is_never_acted_on_again() -> None:
    """A pause or a partition long enough for the lease to end: when this coordinator
    gets a new lease, the transactions it drove under the old one are fenced (another
    coordinator may have claimed them meanwhile): no call, no write from here."""
    store = MemoryStore()
    p = ScriptedParticipant(script={("a", "execute"): [Kind.UNKNOWN]})  # retried for ever
    log, driver = await new_driver(store, "A", p)
    await driver.start(saga_record("fenced"))
    while not p.calls:
        await asyncio.sleep(0.001)
    store.expire("A")  # the lease ends while attempts wait in backoff
    await asyncio.sleep(0.02)
    await log.open()  # a new lease: the keep-alive loop's regrant
    made = len(p.calls)
    await asyncio.sleep(0.1)
    assert len(p.calls) == made, "attempts made under the new lease"
    assert not driver.owns("fenced")


async def test_a_start_is_refused_at_once_while_the_log_is_out_of_reach() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log, driver = await new_driver(store, "A", p)
    core = CoordinatorCore(log, driver)
    store.cut_off.add("A")
    with pytest.raises(Unavailable, match="cannot reach the transaction log"):
        await core.start(StartRequest("cut-1", Protocol.SAGA, saga_record("x").plan, 30.0))
    assert p.calls == [] and "cut-1" not in store.records
    store.cut_off.clear()
    _, created = await core.start(StartRequest("cut-1", Protocol.SAGA,
                                                    saga_record("x").plan, 30.0))
    assert created and await settle(log, "cut-1") is TxState.COMMITTED


class ReplyLostLog(MemoryLog):
    """A log whose first create lands and then fails, as a request whose reply was lost."""

    lost = 1

    async def create(self, record: TxRecord) -> Created:
        created = await super().create(record)
        if self.lost:
            self.lost -= 1
            raise LogError("etcd: request timed out")
        return created


async def test_a_create_whose_reply_was_lost_is_driven_all_the_same() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    log = ReplyLostLog(store, "A")
    await log.open()
    driver = Driver(log, p)
    with pytest.raises(LogError):
        await driver.start(saga_record("lost-reply"))
    assert await settle(log, "lost-reply", within=3.0) is TxState.COMMITTED
    assert p.effects["lost-reply/a/execute"] == 1


async def test_another_coordinators_create_is_not_taken_for_ours() -> None:
    store, p = MemoryStore(), ScriptedParticipant()
    theirs_log, _ = await new_driver(store, "B", p)
    log = ReplyLostLog(store, "A")
    log.lost = 0
    await log.open()
    driver = Driver(log, p)
    ours = saga_record("raced")
    await theirs_log.create(replace(ours, created_at=ours.created_at - 1))  # B's, not driven
    log.lost = 1

    async def failing_create(record: TxRecord) -> Created:
        raise LogError("etcd: request timed out")
    log.create = failing_create  # type: ignore[method-assign]
    with pytest.raises(LogError):
        await driver.start(ours)
    await asyncio.sleep(0.7)
    assert not driver.owns("raced") and p.calls == []
