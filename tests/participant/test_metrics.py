"""The SDK's Prometheus metrics, moved by real calls through a real host and a real relay on
PostgreSQL and MariaDB, and read back as a scrape of the registry would read them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from coordinator import ppb
from coordinator.participant import (
    OutboxMessage,
    PermanentDeliveryError,
    PrometheusParticipantMetrics,
    Relay,
    outbox,
)
from tests.support.metrics import Samples, collect, value

from .conftest import Db
from .test_batch import call, exchange
from .test_host import Served, account, build_host, serve, transfer
from .test_outbox import FAST

pytestmark = pytest.mark.integration


@pytest.fixture
async def metered(db: Db) -> AsyncIterator[tuple[Served, CollectorRegistry]]:
    """A host serving gRPC, reporting into a registry of its own."""
    registry = CollectorRegistry()
    s = await serve(build_host(db.engine, call_timeout_s=5.0,
                               metrics=PrometheusParticipantMetrics(registry)))  # type: ignore[arg-type]
    yield s, registry
    await s.close()


async def test_calls_unary_and_batch_are_counted_by_op_and_outcome(
        db: Db, metered: tuple[Served, CollectorRegistry], gid: str) -> None:
    served, registry = metered
    acct = await account(db, 100)
    assert (await served.call("Execute", gid, "accounts.debit", transfer(acct, 40))).outcome == ppb.OUTCOME_OK
    refused = await served.call("Execute", f"{gid}-2", "accounts.debit", transfer(acct, 1000))
    assert refused.outcome == ppb.OUTCOME_FAILED
    assert (await served.call("Execute", f"{gid}-3", "buggy.op")).outcome == ppb.OUTCOME_RETRY
    undo = await served.call("Compensate", gid, "accounts.refund", transfer(acct, 40))
    assert undo.outcome == ppb.OUTCOME_OK
    found = await exchange(served, [call(1, "Execute", f"{gid}-4", "accounts.debit", transfer(acct, 1))])
    assert found[1].reply.outcome == ppb.OUTCOME_OK  # the Batch stream takes the same path

    samples = collect(registry)
    calls = {(op, outcome): value(samples, "txc_participant_calls_total", op=op, outcome=outcome)
             for op in ("execute", "compensate") for outcome in ("ok", "failed", "retry")}
    assert calls == {("execute", "ok"): 2, ("execute", "failed"): 1, ("execute", "retry"): 1,
                     ("compensate", "ok"): 1, ("compensate", "failed"): 0, ("compensate", "retry"): 0}
    assert value(samples, "txc_participant_call_duration_seconds_count", op="execute") == 4
    assert value(samples, "txc_participant_call_duration_seconds_sum", op="execute") > 0
    assert value(samples, "txc_participant_call_duration_seconds_count", op="compensate") == 1


def findings(samples: Samples) -> dict[str, float]:
    """The barrier's counters with a value, by name and op."""
    names = ("barrier_duplicates", "null_compensations", "hanging_refusals")
    found = {f"{name}/{op}": value(samples, f"txc_participant_{name}_total", op=op)
             for name in names for op in ("execute", "compensate")}
    return {k: v for k, v in found.items() if v}


async def test_retried_calls_are_counted_as_duplicates(
        db: Db, metered: tuple[Served, CollectorRegistry], gid: str) -> None:
    served, registry = metered
    acct = await account(db, 100)
    for attempt in (1, 2):
        await served.call("Execute", gid, "accounts.debit", transfer(acct, 40), attempt=attempt)
    for attempt in (1, 2, 3):
        await served.call("Compensate", gid, "accounts.refund", transfer(acct, 40), attempt=attempt)
    assert await db.count_effects(gid) == 2  # each ran once
    assert findings(collect(registry)) == {"barrier_duplicates/execute": 1,
                                           "barrier_duplicates/compensate": 2}


async def test_a_compensation_first_is_a_null_compensation_and_its_late_action_a_hanging_refusal(
        db: Db, metered: tuple[Served, CollectorRegistry], gid: str) -> None:
    served, registry = metered
    acct = await account(db, 100)
    undo = await served.call("Compensate", gid, "accounts.refund", transfer(acct, 40))
    assert undo.outcome == ppb.OUTCOME_OK
    assert findings(collect(registry)) == {"null_compensations/compensate": 1}
    late = await served.call("Execute", gid, "accounts.debit", transfer(acct, 40))
    assert late.outcome == ppb.OUTCOME_FAILED and "hanging" in late.message
    assert findings(collect(registry)) == {"null_compensations/compensate": 1,
                                           "hanging_refusals/execute": 1}
    assert await db.count_effects(gid) == 0


async def until(registry: CollectorRegistry, check: Callable[[Samples], bool],
                within_s: float = 15.0) -> Samples:
    """The registry's samples once ``check`` holds (the relay reports in its own time)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not check(samples := collect(registry)):
        assert asyncio.get_running_loop().time() < deadline, f"never held; last: {samples}"
        await asyncio.sleep(0.05)
    return samples


def deliveries(samples: Samples, outcome: str) -> float:
    return value(samples, "txc_participant_outbox_deliveries_total", outcome=outcome)


async def test_relay_reports_backlog_lag_and_deliveries(db: Db) -> None:
    registry = CollectorRegistry()
    kind = f"test.metrics.{uuid.uuid4().hex[:8]}"  # the backlog counts this relay's kinds only
    receiver_down = True
    delivered: list[bytes] = []

    async def send(message: OutboxMessage) -> None:
        if message.payload == b"poison":
            raise PermanentDeliveryError("never deliverable")
        if receiver_down:
            raise ConnectionError("receiver down")
        delivered.append(message.payload)

    async with db.engine.begin() as conn:
        for payload in (b"m1", b"m2", b"m3", b"poison"):
            await outbox.add(conn, kind, payload)
    options = replace(FAST, metrics=PrometheusParticipantMetrics(registry), backlog_interval_s=0.05)
    relay = Relay(db.engine, {kind: send}, options)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        backlog = "txc_participant_outbox_backlog"
        lagging = await until(registry, lambda s: value(s, backlog) == 3 and deliveries(s, "retry") >= 3
                              and value(s, "txc_participant_outbox_lag_seconds") >= 0.2)
        assert deliveries(lagging, "failed") == 1 and deliveries(lagging, "sent") == 0
        receiver_down = False
        drained = await until(registry, lambda s: value(s, backlog) == 0 and deliveries(s, "sent") == 3)
        assert value(drained, "txc_participant_outbox_lag_seconds") == 0
        assert sorted(delivered) == [b"m1", b"m2", b"m3"]
    finally:
        stop.set()
        await task
