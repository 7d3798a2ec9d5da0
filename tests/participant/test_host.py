"""ParticipantHost over real gRPC and real databases: outcomes, faults, health, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from txcoord_chaos.proxy import FaultProxy, Reset

from coordinator import ParticipantClient, ppb
from coordinator.participant import (
    BranchContext,
    DsnError,
    HostOptions,
    Op,
    ParticipantHost,
    Refused,
    create_engine,
)
from coordinator.participant._db.tables import barrier as barrier_table

from .conftest import Db, accounts, effects, new_account

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Transfer:
    account: str
    amount: int

    @staticmethod
    def decode(payload: bytes) -> Transfer:
        body = json.loads(payload)
        return Transfer(str(body["account"]), int(body["amount"]))


def build_host(engine: AsyncEngine, **options: float) -> ParticipantHost:
    opts = {"call_timeout_s": 1.0, "health_interval_s": 0.1, "health_timeout_s": 0.5,
            "shutdown_grace_s": 2.0, **options}
    host = ParticipantHost(engine, HostOptions(**opts))  # type: ignore[arg-type]

    async def move(ctx: BranchContext, conn: AsyncConnection, t: Transfer, sign: int) -> bytes:
        row = (await conn.execute(select(accounts.c.balance).where(accounts.c.id == t.account)
                                  .with_for_update())).first()
        if row is None:
            raise Refused(f"no account {t.account}")
        if row.balance + sign * t.amount < 0:
            raise Refused("insufficient funds")
        await conn.execute(update(accounts).where(accounts.c.id == t.account)
                           .values(balance=row.balance + sign * t.amount))
        await conn.execute(effects.insert().values(gid=ctx.gid, op=ctx.op.value, amount=t.amount))
        return json.dumps({"balance": row.balance + sign * t.amount}).encode()

    @host.execute("accounts.debit", decode=Transfer.decode)
    async def debit(ctx: BranchContext, conn: AsyncConnection, t: Transfer) -> bytes:
        return await move(ctx, conn, t, -1)

    @host.compensate("accounts.refund", decode=Transfer.decode)
    async def refund(ctx: BranchContext, conn: AsyncConnection, t: Transfer) -> bytes:
        return await move(ctx, conn, t, +1)

    @host.execute("slow.op")
    async def slow(ctx: BranchContext, conn: AsyncConnection, payload: bytes) -> bytes:
        await conn.execute(effects.insert().values(gid=ctx.gid, op="execute", amount=0))
        await asyncio.sleep(float(payload or b"5"))
        return b"slow done"

    @host.execute("buggy.op")
    async def buggy(ctx: BranchContext, conn: AsyncConnection, payload: bytes) -> bytes:
        await conn.execute(effects.insert().values(gid=ctx.gid, op="execute", amount=0))
        raise RuntimeError("a bug")

    return host


@dataclass
class Served:
    host: ParticipantHost
    client: ParticipantClient
    health: health_pb2_grpc.HealthStub
    channel: grpc.aio.Channel

    async def call(self, method: str, gid: str, operation: str, payload: bytes = b"",
                   branch: str = "b1", attempt: int = 1, deadline_s: float = 10) -> ppb.BranchReply:
        return await self.client.call(method.lower(), gid, branch, operation, payload,
                                      attempt=attempt, timeout_s=deadline_s)

    async def status(self) -> int:
        answer = await self.health.Check(health_pb2.HealthCheckRequest(service="txc.v1.Participant"))
        return int(answer.status)

    async def close(self) -> None:
        await self.client.close()
        await self.channel.close(None)
        await self.host.stop(0)


async def serve(host: ParticipantHost) -> Served:
    port = await host.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return Served(host, ParticipantClient(f"127.0.0.1:{port}"), health_pb2_grpc.HealthStub(channel),
                  channel)


@pytest.fixture
async def served(db: Db) -> AsyncIterator[Served]:
    s = await serve(build_host(db.engine))
    yield s
    await s.close()


def transfer(account: str, amount: int) -> bytes:
    return json.dumps({"account": account, "amount": amount}).encode()


async def account(db: Db, balance: int = 100) -> str:
    async with db.engine.begin() as conn:
        return await new_account(conn, balance)


async def rows_for(db: Db, gid: str) -> int:
    async with db.engine.connect() as conn:
        return len((await conn.execute(
            select(barrier_table.c.id).where(barrier_table.c.gid == gid))).all())


async def test_debit_then_refund_exactly_once_over_grpc(db: Db, served: Served, gid: str) -> None:
    acct = await account(db)
    first = await served.call("Execute", gid, "accounts.debit", transfer(acct, 40))
    assert first.outcome == ppb.OUTCOME_OK and json.loads(first.result) == {"balance": 60}
    again = await served.call("Execute", gid, "accounts.debit", transfer(acct, 40), attempt=2)
    assert again == first  # same reply, no second debit
    for attempt in (1, 2):
        undo = await served.call("Compensate", gid, "accounts.refund", transfer(acct, 40),
                                 attempt=attempt)
        assert undo.outcome == ppb.OUTCOME_OK and json.loads(undo.result) == {"balance": 100}
    assert await db.count_effects(gid) == 2


async def test_business_refusal_is_failed(db: Db, served: Served, gid: str) -> None:
    acct = await account(db, 10)
    reply = await served.call("Execute", gid, "accounts.debit", transfer(acct, 11))
    assert (reply.outcome, reply.message) == (ppb.OUTCOME_FAILED, "insufficient funds")
    assert await db.count_effects(gid) == 0


async def test_unknown_operation_is_unimplemented_naming_it_and_what_is_served(
        served: Served, gid: str) -> None:
    """A misnamed operation is a misconfiguration (UNIMPLEMENTED: nothing ran), never an
    OUTCOME_FAILED that the coordinator would take for the business saying no."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await served.call("Execute", gid, "accounts.transmogrify")
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "unknown operation 'accounts.transmogrify' for execute" in str(refused.value.details())
    assert "this service has: accounts.debit, buggy.op, slow.op" in str(refused.value.details())
    # Not registered for two-phase commit either: the same, for Prepare and its phase 2.
    for method in ("Prepare", "Commit"):
        with pytest.raises(grpc.aio.AioRpcError) as no_2pc:
            await served.call(method, gid, "accounts.debit")
        assert no_2pc.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # Called without gRPC, the host answers FAILED with the same words.
    direct = await served.host.handle(Op.COMPENSATE, ppb.BranchRequest(
        gid=gid, branch="b1", operation="accounts.debit", idempotency_key=f"{gid}/b1/compensate"))
    assert direct.outcome == ppb.OUTCOME_FAILED and "unknown operation" in direct.message


async def test_the_host_lists_what_it_serves(served: Served) -> None:
    listed = await served.client.operations()
    assert list(listed.execute) == ["accounts.debit", "buggy.op", "slow.op"]
    assert list(listed.compensate) == ["accounts.refund"] and not listed.prepare


async def test_undecodable_payload_is_failed(db: Db, served: Served, gid: str) -> None:
    reply = await served.call("Execute", gid, "accounts.debit", b"\xff{not json")
    assert reply.outcome == ppb.OUTCOME_FAILED
    assert "cannot be decoded" in reply.message and "\\xff" not in reply.message
    assert await db.count_effects(gid) == 0


async def test_invalid_request_is_failed(served: Served) -> None:
    reply = await served.call("Execute", "", "accounts.debit")
    assert reply.outcome == ppb.OUTCOME_FAILED and "gid must not be empty" in reply.message


async def test_bug_in_handler_is_retry_and_rolls_back(db: Db, served: Served, gid: str) -> None:
    reply = await served.call("Execute", gid, "buggy.op")
    assert reply.outcome == ppb.OUTCOME_RETRY and "RuntimeError" in reply.message
    assert await db.count_effects(gid) == 0 and await rows_for(db, gid) == 0


async def test_call_timeout_is_retry_and_leaves_nothing(db: Db, gid: str) -> None:
    s = await serve(build_host(db.engine, call_timeout_s=0.3))
    try:
        reply = await s.call("Execute", gid, "slow.op", b"5")
        assert reply.outcome == ppb.OUTCOME_RETRY and "timed out" in reply.message
        assert await db.count_effects(gid) == 0 and await rows_for(db, gid) == 0
        again = await s.call("Execute", gid, "slow.op", b"0.01", attempt=2)
        assert again.outcome == ppb.OUTCOME_OK
        assert await db.open_transactions() == 0
    finally:
        await s.close()


async def test_work_outlives_an_impatient_caller_and_its_retry_gets_the_outcome(
        db: Db, gid: str) -> None:
    s = await serve(build_host(db.engine, call_timeout_s=5.0))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.call("Execute", gid, "slow.op", b"0.6", deadline_s=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(1.0)  # the work went on without the caller and committed
        assert await db.count_effects(gid) == 1
        again = await s.call("Execute", gid, "slow.op", b"0.6", attempt=2, deadline_s=0.3)
        assert (again.outcome, again.result) == (ppb.OUTCOME_OK, b"slow done")
        assert await db.count_effects(gid) == 1
    finally:
        await s.close()


async def test_database_down_is_retry_and_health_follows(db: Db, gid: str) -> None:
    url = make_url(db.dsn)
    proxy = FaultProxy("127.0.0.1", 0, url.host or "127.0.0.1", url.port or 0, "database")
    port = await proxy.start()
    engine = create_engine(url.set(port=port).render_as_string(hide_password=False))
    s = await serve(build_host(engine))
    try:
        acct = await account(db)
        assert await s.status() == health_pb2.HealthCheckResponse.SERVING
        proxy.set_fault("both", Reset())  # every connection reset, new ones refused
        down = await s.call("Execute", gid, "accounts.debit", transfer(acct, 1))
        assert down.outcome == ppb.OUTCOME_RETRY, down.message
        await _eventually(s, health_pb2.HealthCheckResponse.NOT_SERVING)
        proxy.heal()
        await _eventually(s, health_pb2.HealthCheckResponse.SERVING)
        up = await s.call("Execute", gid, "accounts.debit", transfer(acct, 1), attempt=2)
        assert up.outcome == ppb.OUTCOME_OK
        assert await db.count_effects(gid) == 1
    finally:
        await s.close()
        await proxy.stop()
        await engine.dispose()


async def _eventually(s: Served, status: int) -> None:
    for _ in range(50):
        if await s.status() == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never became {status}")


async def test_wrong_dsn_at_startup_names_it_without_the_password() -> None:
    engine = create_engine("postgresql+asyncpg://app:s3cret@127.0.0.1:1/shop")
    host = ParticipantHost(engine)
    with pytest.raises(DsnError) as err:
        await host.start("127.0.0.1:0")
    assert "postgresql+asyncpg://app:***@127.0.0.1:1/shop" in str(err.value)
    assert "s3cret" not in str(err.value)
    await engine.dispose()
    with pytest.raises(DsnError, match="supported"):  # a synchronous driver
        create_engine("postgresql+psycopg2://app:s3cret@db/shop")


async def test_stop_lets_calls_in_flight_finish(db: Db, gid: str) -> None:
    s = await serve(build_host(db.engine, call_timeout_s=5.0))
    in_flight = asyncio.ensure_future(s.call("Execute", gid, "slow.op", b"0.5"))
    await asyncio.sleep(0.2)
    await s.host.stop(grace_s=3.0)
    reply = await in_flight
    assert reply.outcome == ppb.OUTCOME_OK and reply.result == b"slow done"
    assert await db.count_effects(gid) == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.call("Execute", f"{gid}-late", "slow.op", b"0")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    await s.channel.close(None)


def test_duplicate_registration_is_refused(db: Db) -> None:
    host = build_host(db.engine)
    with pytest.raises(ValueError, match="already registered"):
        host.execute("accounts.debit")(lambda ctx, conn, payload: None)  # type: ignore[arg-type,return-value]


async def _server_ids(engine: AsyncEngine, kind: str, count: int) -> list[int]:
    """Fill the pool with ``count`` connections; the server's id for each session."""
    query = "SELECT pg_backend_pid()" if kind == "postgresql" else "SELECT CONNECTION_ID()"
    conns = [await engine.connect() for _ in range(count)]
    try:
        return [int((await c.exec_driver_sql(query)).scalar_one()) for c in conns]
    finally:
        for c in conns:
            await c.close()


async def test_connections_the_server_dropped_fail_no_call_and_no_health_check(db: Db, gid: str) -> None:
    """The SDK's engine does not pre-ping: a pooled connection the server ended (restart,
    idle timeout) is found by the call that uses it, which is retried on a new one."""
    engine = create_engine(db.dsn, pool_size=4, max_overflow=0)
    s = await serve(build_host(engine))
    try:
        acct = await account(db)
        ids = await _server_ids(engine, db.kind, 2)
        await _kill_sessions(db, ids[:2])
        seen = await _health_statuses(s, seconds=0.5)  # probes (every 0.1 s) meet the dead ones
        assert seen and set(seen) == {health_pb2.HealthCheckResponse.SERVING}, seen
        await _kill_sessions(db, await _server_ids(engine, db.kind, 4))
        reply = await s.call("Execute", gid, "accounts.debit", transfer(acct, 10))
        assert reply.outcome == ppb.OUTCOME_OK, reply.message
        assert await rows_for(db, gid) == 1
    finally:
        await s.close()
        await engine.dispose()


async def _kill_sessions(db: Db, ids: list[int]) -> None:
    async with db.engine.connect() as admin:
        for session in ids:
            kill = (f"SELECT pg_terminate_backend({session})" if db.kind == "postgresql"
                    else f"KILL CONNECTION {session}")
            await admin.exec_driver_sql(kill)
        await admin.commit()


async def _health_statuses(s: Served, seconds: float) -> list[int]:
    """Every status the health Watch stream reports within ``seconds``."""
    seen: list[int] = []
    stream = s.health.Watch(health_pb2.HealthCheckRequest(service="txc.v1.Participant"))

    async def read() -> None:
        async for answer in stream:
            seen.append(int(answer.status))

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), seconds)
    stream.cancel()
    return seen


async def test_a_compensation_sees_its_actions_result_and_says_when_it_was_null(
        db: Db, gid: str) -> None:
    host = ParticipantHost(db.engine)
    seen: list[bytes] = []

    @host.execute("box.reserve")
    async def reserve(ctx: BranchContext, conn: AsyncConnection, payload: bytes) -> bytes:
        return b"reservation-7"

    @host.compensate("box.release")
    async def release(ctx: BranchContext, conn: AsyncConnection, payload: bytes) -> None:
        seen.append(ctx.action_result)

    def request(branch: str, op: Op, operation: str, action_result: bytes = b"") -> ppb.BranchRequest:
        return ppb.BranchRequest(gid=gid, branch=branch, operation=operation, attempt=1,
                                 idempotency_key=f"{gid}/{branch}/{op.value}",
                                 action_result=action_result)

    done = await host.handle(Op.EXECUTE, request("b1", Op.EXECUTE, "box.reserve"))
    undo = request("b1", Op.COMPENSATE, "box.release", done.result)  # as the coordinator sends it
    undone = await host.handle(Op.COMPENSATE, undo)
    assert seen == [b"reservation-7"]
    assert undone.outcome == ppb.OUTCOME_OK and not undone.null_compensation
    # b2's action never arrived here: nothing to undo, and the reply says so, repeats too.
    null = await host.handle(Op.COMPENSATE, request("b2", Op.COMPENSATE, "box.release"))
    assert null.outcome == ppb.OUTCOME_OK and null.null_compensation and seen == [b"reservation-7"]
    assert (await host.handle(Op.COMPENSATE, request("b2", Op.COMPENSATE, "box.release"))
            ).null_compensation
    assert not (await host.handle(Op.COMPENSATE, undo)).null_compensation
