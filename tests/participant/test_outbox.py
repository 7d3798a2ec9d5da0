"""Outbox + relay on real PostgreSQL and MariaDB, with a real gRPC receiver and real
process kills."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator import CoordinatorClient, Failover
from coordinator import pb as cpb
from coordinator.participant import (
    DsnError,
    OutboxError,
    OutboxMessage,
    Relay,
    RelayOptions,
    StartSagaSender,
    create_engine,
    outbox,
)
from coordinator.participant._db.tables import TRACE_CHARS
from coordinator.participant._db.tables import outbox as outbox_table
from coordinator.participant.outbox import START_SAGA
from coordinator.participant.outbox._messages import decode_trace, encode_trace
from tests.support.processes import Child

from ._outbox_child import LEASE, saga
from ._receiver import SagaReceiver
from .conftest import Db

pytestmark = pytest.mark.integration

CHILD = "tests.participant._outbox_child"
Relaying = tuple[SagaReceiver, StartSagaSender]
FAST = RelayOptions(lease_s=2.0, send_timeout_s=0.5, poll_interval_s=0.05, initial_backoff_s=0.01,
                    max_backoff_s=0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[SagaReceiver, str]]:
    r = SagaReceiver()
    target = await r.start()
    yield r, target
    await r.stop()


@pytest.fixture
async def relay_for(receiver: tuple[SagaReceiver, str]) -> AsyncIterator[Relaying]:
    r, target = receiver
    sender = StartSagaSender(target, timeout_s=1.0)
    yield r, sender
    await sender.close()


async def queue(engine: AsyncEngine, *gids: str) -> list[int]:
    async with engine.begin() as conn:
        return [await outbox.add_start_saga(conn, saga(g)) for g in gids]


async def row(engine: AsyncEngine, message_id: int) -> dict[str, object]:
    t = outbox_table
    async with engine.connect() as conn:
        found = (await conn.execute(select(t).where(t.c.id == message_id))).one()
    return dict(found._mapping)


async def clear_due(engine: AsyncEngine) -> None:
    """Other tests' leftovers must not be delivered by this test's relay."""
    t = outbox_table
    async with engine.begin() as conn:
        await conn.execute(update(t).where(t.c.status == "pending").values(status="parked"))


def gids(n: int) -> list[str]:
    return [f"saga-{uuid.uuid4().hex[:10]}" for _ in range(n)]


async def test_message_commits_and_rolls_back_with_the_business_transaction(db: Db) -> None:
    kept, dropped = gids(2)
    await queue(db.engine, kept)
    with pytest.raises(RuntimeError):
        async with db.engine.begin() as conn:
            await outbox.add_start_saga(conn, saga(dropped))
            raise RuntimeError("business failed")
    t = outbox_table
    async with db.engine.connect() as conn:
        payloads = (await conn.execute(select(t.c.payload).where(t.c.kind == START_SAGA))).scalars()
        seen = {cpb.StartSagaRequest.FromString(p).gid for p in payloads}
    assert kept in seen and dropped not in seen


async def test_add_refuses_what_cannot_be_delivered_safely(db: Db) -> None:
    async with db.engine.connect() as conn:
        with pytest.raises(OutboxError, match="transaction"):
            await outbox.add(conn, START_SAGA, b"")
    async with db.engine.begin() as conn:
        with pytest.raises(OutboxError, match="gid"):
            await outbox.add_start_saga(conn, cpb.StartSagaRequest(branches=[cpb.Branch(name="a")]))


async def test_relay_delivers_once_and_marks_sent(db: Db, relay_for: Relaying) -> None:
    r, sender = relay_for
    await clear_due(db.engine)
    names = gids(3)
    ids = await queue(db.engine, *names)
    relay = Relay(db.engine, {START_SAGA: sender}, FAST)
    stats = await relay.run_once()
    assert (stats.claimed, stats.sent) == (3, 3)
    assert (await relay.run_once()).claimed == 0
    assert all(r.calls[g] == 1 for g in names)
    for message_id in ids:
        state = await row(db.engine, message_id)
        assert state["status"] == "sent" and state["sent_at"] is not None
        assert state["attempts"] == 1 and state["claim_token"] is None


async def test_relay_retries_with_backoff_until_delivered(
        db: Db, receiver: tuple[SagaReceiver, str]) -> None:
    r, target = receiver
    await clear_due(db.engine)
    (name,) = gids(1)
    (message_id,) = await queue(db.engine, name)
    # Each send is one client call, which gRPC itself sends again on UNAVAILABLE
    # (Failover.max_attempts): the first claim's two sends all fail, the next claim's
    # first send gets through on its second attempt.
    failover = Failover(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.01)
    r.fail_first = 2 * failover.max_attempts + 1
    client = CoordinatorClient(target, failover=failover)
    relay = Relay(db.engine, {START_SAGA: StartSagaSender(client, timeout_s=5.0)},
                  RelayOptions(**{**FAST.__dict__, "send_attempts": 2}))
    try:
        first = await relay.run_once()
        assert first.retry_later == 1
        state = await row(db.engine, message_id)
        assert state["status"] == "pending" and "UNAVAILABLE" in str(state["last_error"])
        for _ in range(40):
            if (await relay.run_once()).sent:
                break
            await asyncio.sleep(0.03)
    finally:
        await client.close()
    state = await row(db.engine, message_id)
    assert state["status"] == "sent" and state["last_error"] is None
    assert r.calls[name] == 2 * failover.max_attempts + 2 and state["attempts"] == 2  # 2 claims


async def test_permanent_refusal_is_kept_as_failed(db: Db, relay_for: Relaying) -> None:
    r, sender = relay_for
    await clear_due(db.engine)
    (name,) = gids(1)
    r.invalid.add(name)
    (message_id,) = await queue(db.engine, name)
    relay = Relay(db.engine, {START_SAGA: sender}, FAST)
    assert (await relay.run_once()).failed == 1
    assert (await relay.run_once()).claimed == 0
    state = await row(db.engine, message_id)
    assert state["status"] == "failed" and "INVALID_ARGUMENT" in str(state["last_error"])
    assert r.calls[name] == 1


async def test_kinds_without_a_sender_stay_pending(db: Db, relay_for: Relaying) -> None:
    _, sender = relay_for
    await clear_due(db.engine)
    async with db.engine.begin() as conn:
        other = await outbox.add(conn, "orders.created", b"{}")
    assert (await Relay(db.engine, {START_SAGA: sender}, FAST).run_once()).claimed == 0
    assert (await row(db.engine, other))["status"] == "pending"


async def test_two_relays_at_once_never_deliver_twice(db: Db, receiver: tuple[SagaReceiver, str]) -> None:
    r, target = receiver
    await clear_due(db.engine)
    names = gids(120)
    await queue(db.engine, *names)
    engines = [create_engine(db.dsn), create_engine(db.dsn)]
    senders = [StartSagaSender(target), StartSagaSender(target)]
    delivered: Counter[int] = Counter()

    def counting(i: int, sender: StartSagaSender):  # type: ignore[no-untyped-def]
        async def send(message: OutboxMessage) -> None:
            await sender(message)
            delivered[i] += 1
        return send

    stop = asyncio.Event()
    options = RelayOptions(**{**FAST.__dict__, "batch_size": 8})
    tasks = [asyncio.ensure_future(Relay(engines[i], {START_SAGA: counting(i, senders[i])},
                                         options).run(stop)) for i in range(2)]
    try:
        for _ in range(200):
            if sum(r.calls[g] for g in names) >= len(names) and await _sent(db, len(names)):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for s in senders:
            await s.close()
        for e in engines:
            await e.dispose()
    assert {r.calls[g] for g in names} == {1}
    assert delivered[0] > 0 and delivered[1] > 0  # both relays really worked
    assert delivered[0] + delivered[1] == len(names)


async def _sent(db: Db, at_least: int) -> bool:
    t = outbox_table
    async with db.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(t).where(t.c.status == "sent"))).scalar_one()
    return int(n) >= at_least


async def test_crash_after_commit_before_delivery_delivers_exactly_once(
        db: Db, relay_for: Relaying, tmp_path: Path) -> None:
    r, sender = relay_for
    await clear_due(db.engine)
    (name,) = gids(1)
    child = Child(tmp_path / "write.log", CHILD, "write", db.dsn, name)
    try:
        line = await child.line()
        assert line.startswith("committed ")
    finally:
        child.kill()
    message_id = int(line.split()[1])
    assert (await row(db.engine, message_id))["status"] == "pending"
    assert await db.count_effects(name) == 1  # the business change committed with it
    assert r.calls[name] == 0
    relay = Relay(db.engine, {START_SAGA: sender}, FAST)  # the restarted service
    assert (await relay.run_once()).sent == 1
    assert (await relay.run_once()).claimed == 0
    assert r.calls[name] == 1 and (await row(db.engine, message_id))["status"] == "sent"


async def test_relay_killed_mid_delivery_is_redelivered_without_a_second_saga(
        db: Db, relay_for: Relaying, tmp_path: Path) -> None:
    r, sender = relay_for
    await clear_due(db.engine)
    (name,) = gids(1)
    (message_id,) = await queue(db.engine, name)
    r.hold.add(name)  # the coordinator receives the call but has not answered yet
    child = Child(tmp_path / "relay.log", CHILD, "relay", db.dsn, f"127.0.0.1:{r.port}")
    try:
        assert await child.line() == "relaying"
        for _ in range(100):
            if r.calls[name]:
                break
            await asyncio.sleep(0.02)
    finally:
        child.kill()
    assert r.calls[name] >= 1
    r.release.set()
    relay = Relay(db.engine, {START_SAGA: sender}, FAST)
    assert (await relay.run_once()).claimed == 0  # still leased by the dead relay
    await asyncio.sleep(LEASE)
    assert (await relay.run_once()).sent == 1
    assert (await row(db.engine, message_id))["status"] == "sent"
    assert r.calls[name] >= 2 and r.created[name] == 1  # redelivered, one saga


async def test_relay_with_a_wrong_dsn_fails_at_start_naming_it() -> None:
    engine = create_engine("mysql+aiomysql://svc:s3cret@127.0.0.1:1/shop")

    async def send(message: OutboxMessage) -> None:
        raise AssertionError("nothing to send")

    try:
        with pytest.raises(DsnError, match=r"mysql\+aiomysql://svc:\*\*\*@127\.0\.0\.1:1/shop"):
            await Relay(engine, {START_SAGA: send}).run()
    finally:
        await engine.dispose()


async def test_a_saga_started_from_the_outbox_joins_the_trace_its_message_was_written_in(
        db: Db, relay_for: Relaying) -> None:
    r, sender = relay_for
    await clear_due(db.engine)
    traced, untraced = gids(2)
    tracer = TracerProvider().get_tracer("shop")
    with tracer.start_as_current_span("checkout") as checkout:
        (traced_id,) = await queue(db.engine, traced)
    (untraced_id,) = await queue(db.engine, untraced)
    assert (await row(db.engine, untraced_id))["trace"] is None
    # The relay runs outside any span, later: the message brings its own.
    stats = await Relay(db.engine, {START_SAGA: sender}, FAST).run_once()
    assert stats.sent == 2
    trace_id = f"{checkout.get_span_context().trace_id:032x}"
    assert r.traceparents[traced].split("-")[1] == trace_id
    assert untraced not in r.traceparents
    assert trace_id in str((await row(db.engine, traced_id))["trace"])


def test_a_stored_trace_never_outgrows_its_column_and_a_damaged_one_is_none() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    wide = {"traceparent": parent, "baggage": "k=" + "\u00e9" * 900}  # 6 characters each, escaped
    encoded = encode_trace(wide)
    assert encoded is not None and len(encoded) <= TRACE_CHARS
    assert decode_trace(encoded) == {"traceparent": parent}
    assert decode_trace("not json") == decode_trace('["a"]') == decode_trace(None) == {}
