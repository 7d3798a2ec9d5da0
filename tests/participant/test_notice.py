"""The settlement's notice end to end: real coordinators on real etcd, the SDK's
``@host.notice`` receiver on PostgreSQL. Applied once by a receiver that fails its first
attempts and is restarted in between; delivered by another coordinator when the owner dies
before it could notify; a notice of an operation the receiver does not serve is given up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator import CoordinatorClient, Notify, Retry, Saga, Step, TwoPhase, pb, ppb
from coordinator.engine import OperationsCheck
from coordinator.participant import BranchContext, HostOptions, Op, ParticipantHost
from coordinator.participant._db.tables import barrier as barrier_table
from coordinator.rpc.net import free_port
from coordinator.server import DevEtcd
from tests.integration.conftest import CoordinatorProcess
from tests.support.coordinators import running, server_options

from .conftest import Db, effects
from .test_host import Served, account, build_host, serve, transfer

pytestmark = [pytest.mark.integration,
              pytest.mark.parametrize("db", ["postgresql"], indirect=True)]

QUICK = Retry(max_attempts=0, initial_backoff_s=0.05, max_backoff_s=0.3)


@dataclass
class Receiver:
    """A service told of settlements: each notice it applies is one row in sdk_effects
    (op "notify"); its first ``fail_first`` calls raise (rolled back, answered RETRY)."""

    engine: AsyncEngine
    port: int = field(default_factory=free_port)
    fail_first: int = 0
    calls: int = 0
    seen: list[pb.Transaction] = field(default_factory=list)
    host: ParticipantHost | None = None
    failed_once: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """A new host on the same port: what a restarted service process brings up."""
        host = ParticipantHost(self.engine, HostOptions(call_timeout_s=2.0, shutdown_grace_s=1.0))

        @host.notice("orders.settled")
        async def settled(ctx: BranchContext, conn: AsyncConnection, tx: pb.Transaction) -> bytes:
            self.calls += 1
            self.seen.append(tx)
            if self.calls <= self.fail_first:
                self.failed_once.set()
                raise RuntimeError("the receiver's downstream is not ready yet")
            await conn.execute(effects.insert().values(gid=tx.gid, op="notify", amount=tx.state))
            return b"noted"

        await host.start(self.address)
        self.host = host

    async def stop(self) -> None:
        if self.host is not None:
            await self.host.stop(0.5)
            self.host = None


@pytest.fixture
async def accounts_host(db: Db) -> AsyncIterator[Served]:
    s = await serve(build_host(db.engine))
    yield s
    await s.close()


@pytest.fixture
async def receiver(db: Db) -> AsyncIterator[Receiver]:
    r = Receiver(db.engine)
    yield r
    await r.stop()


async def noted(db: Db, gid: str) -> int:
    return await db.count_effects(gid, "notify")


async def until_noticed(c: CoordinatorClient, gid: str, within_s: float = 30.0) -> pb.Transaction:
    """The transaction once its notice ended (acknowledged or given up)."""
    end = asyncio.get_running_loop().time() + within_s
    while True:
        tx = await c.get(gid)
        if tx.notice.state in (pb.NOTICE_STATE_ACKNOWLEDGED, pb.NOTICE_STATE_GAVE_UP):
            return tx
        assert asyncio.get_running_loop().time() < end, f"notice of {gid}: {tx.notice}"
        await asyncio.sleep(0.1)


def saga(gid: str, accounts_host: Served, acct: str, target: Notify) -> Saga:
    return Saga(gid=gid, notify=target, steps=[
        Step("pay", accounts_host.client.address, "accounts.debit", "accounts.refund",
             transfer(acct, 10), retry=QUICK)])


async def test_a_receiver_that_fails_then_restarts_applies_the_notice_once(
        db: Db, accounts_host: Served, receiver: Receiver, etcd: DevEtcd, prefix: str,
        gid: str) -> None:
    receiver.fail_first = 2
    await receiver.start()
    acct = await account(db, 100)
    target = Notify(receiver.address, "orders.settled", retry=QUICK, budget_s=60)
    async with running(server_options(etcd, prefix)) as server, \
            CoordinatorClient(f"127.0.0.1:{server.port}") as c:
        tx = (await c.start_saga(saga(gid, accounts_host, acct, target), wait=True)).transaction
        assert tx.state == pb.TX_STATE_COMMITTED
        await asyncio.wait_for(receiver.failed_once.wait(), 10)
        await receiver.stop()  # the service goes down while the notice is retried
        assert (await c.get(gid)).notice.state == pb.NOTICE_STATE_PENDING
        assert await noted(db, gid) == 0  # the failed attempts were rolled back
        await asyncio.sleep(0.5)
        await receiver.start()  # and comes back (a new host: nothing remembered in memory)
        tx = await until_noticed(c, gid)
    assert tx.notice.state == pb.NOTICE_STATE_ACKNOWLEDGED, tx.notice.error
    assert tx.notice.attempts >= 3 and tx.notice.generation == 1
    assert tx.notice.participant == receiver.address and tx.notice.operation == "orders.settled"
    actions = [h.action for h in tx.history]
    assert actions.index("notify sent") < actions.index("notify acknowledged")
    assert await noted(db, gid) == 1
    told = receiver.seen[-1]
    assert told.gid == gid and told.state == pb.TX_STATE_COMMITTED
    assert [b.name for b in told.branches] == ["pay"]

    # A late duplicate (a coordinator's retry that crossed the acknowledgement) finds the
    # barrier row: the stored reply, nothing applied again.
    assert receiver.host is not None
    reply = await receiver.host.handle(Op.EXECUTE, ppb.BranchRequest(
        gid=gid, branch="/notify", operation="orders.settled", payload=told.SerializeToString(),
        idempotency_key=f"{gid}/notify", attempt=9))
    assert reply.outcome == ppb.OUTCOME_OK and reply.result == b"noted"
    assert await noted(db, gid) == 1
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(barrier_table.c.branch, barrier_table.c.op)
                                   .where(barrier_table.c.gid == gid))).all()
    assert sorted(tuple(r) for r in rows) == [("/notify", "execute"), ("pay", "execute")]


async def test_the_notice_of_a_coordinator_that_died_is_delivered_by_another(
        db: Db, accounts_host: Served, receiver: Receiver, etcd: DevEtcd, prefix: str,
        gid: str, tmp_path: Path) -> None:
    acct = await account(db, 100)
    target = Notify(receiver.address, "orders.settled", retry=QUICK, budget_s=120)
    first = CoordinatorProcess(etcd, prefix, tmp_path)
    try:
        await first.ready()
        async with CoordinatorClient(f"127.0.0.1:{first.port}") as c1:
            tx = (await c1.start_saga(saga(gid, accounts_host, acct, target), wait=True)).transaction
            assert tx.state == pb.TX_STATE_COMMITTED
            assert tx.notice.state == pb.NOTICE_STATE_PENDING  # the receiver is not up
        first.kill()  # the owner dies before it could notify anyone
    finally:
        first.stop()
    await receiver.start()
    async with running(server_options(etcd, prefix)) as second, \
            CoordinatorClient(f"127.0.0.1:{second.port}") as c2:
        tx = await until_noticed(c2, gid)
    assert tx.notice.state == pb.NOTICE_STATE_ACKNOWLEDGED, tx.notice.error
    assert await noted(db, gid) == 1
    assert receiver.calls == 1  # only the second coordinator reached it, once


async def test_a_notice_the_receiver_does_not_serve_is_refused_at_the_start(
        db: Db, accounts_host: Served, receiver: Receiver, etcd: DevEtcd, prefix: str,
        gid: str) -> None:
    """The receiver lists what it serves (Operations): a misspelt notice is refused before
    anything is written, as a misspelt action is."""
    await receiver.start()
    acct = await account(db, 100)
    target = Notify(receiver.address, "orders.setled", retry=QUICK, budget_s=60)
    async with running(server_options(etcd, prefix)) as server, \
            CoordinatorClient(f"127.0.0.1:{server.port}") as c:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.start_saga(saga(gid, accounts_host, acct, target), wait=True)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = str(refused.value.details())
        assert details.startswith("notify.operation") and "orders.settled" in details
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await c.get(gid)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unchecked_a_notice_the_receiver_does_not_serve_is_given_up_at_once(
        db: Db, accounts_host: Served, receiver: Receiver, etcd: DevEtcd, prefix: str,
        gid: str) -> None:
    await receiver.start()
    acct = await account(db, 100)
    target = Notify(receiver.address, "orders.setled", retry=QUICK, budget_s=60)
    options = replace(server_options(etcd, prefix), operations=OperationsCheck(enabled=False))
    async with running(options) as server, CoordinatorClient(f"127.0.0.1:{server.port}") as c:
        await c.start_saga(saga(gid, accounts_host, acct, target), wait=True)
        tx = await until_noticed(c, gid, within_s=10)
    assert tx.notice.state == pb.NOTICE_STATE_GAVE_UP and tx.notice.attempts == 1
    assert "orders.setled" in tx.notice.error and "misconfigured" in tx.notice.error
    assert tx.history[-1].action == "notify given up"
    assert tx.state == pb.TX_STATE_COMMITTED and await noted(db, gid) == 0


async def test_bad_notify_fields_are_refused_naming_them_and_a_different_target_is_another_plan(
        accounts_host: Served, etcd: DevEtcd, prefix: str, gid: str) -> None:
    options = replace(server_options(etcd, prefix), allow_participants=("127.0.0.1:*",))
    good = Notify("127.0.0.1:9", "orders.settled")
    async with running(options) as server, CoordinatorClient(f"127.0.0.1:{server.port}") as c:
        for target, field_name in ((Notify("elsewhere:9", "o"), "notify.participant"),
                                   (Notify("127.0.0.1", "o"), "notify.participant"),
                                   (Notify("127.0.0.1:9", ""), "notify.operation"),
                                   (Notify("127.0.0.1:9", "o", budget_s=8 * 86400), "notify.budget"),
                                   (Notify("127.0.0.1:9", "o", timeout_s=-1), "notify.timeout")):
            for start in (c.start_saga(saga(gid, accounts_host, "nobody", target)),
                          c.start_two_phase(TwoPhase(gid=gid, notify=target, steps=[
                              Step("pay", accounts_host.client.address, "accounts.debit")]))):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await start
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert str(refused.value.details()).startswith(field_name), refused.value.details()
        first = saga(gid, accounts_host, "nobody", good)
        await c.start_saga(first)
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await c.start_saga(replace(first, notify=replace(good, operation="orders.other")))
        assert other.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert not (await c.start_saga(first)).created  # the same target: the same plan


async def test_a_branch_calling_a_notice_operation_is_refused(receiver: Receiver, gid: str) -> None:
    await receiver.start()
    assert receiver.host is not None
    reply = await receiver.host.handle(Op.EXECUTE, ppb.BranchRequest(
        gid=gid, branch="pay", operation="orders.settled",
        payload=pb.Transaction(gid=gid).SerializeToString(),
        idempotency_key=f"{gid}/pay/execute", attempt=1))
    assert reply.outcome == ppb.OUTCOME_FAILED and "notices" in reply.message
    assert receiver.calls == 0


async def test_a_failed_saga_settled_again_by_an_operator_is_noticed_again_under_a_new_key(
        db: Db, accounts_host: Served, receiver: Receiver, etcd: DevEtcd, prefix: str,
        gid: str) -> None:
    """One notice per settlement: FAILED (its compensation is not served), then COMPENSATED
    once an operator skips the branch; each applied once by the receiver's barrier."""
    await receiver.start()
    acct = await account(db, 100)
    target = Notify(receiver.address, "orders.settled", retry=QUICK, budget_s=60)
    options = replace(server_options(etcd, prefix), operations=OperationsCheck(enabled=False))
    plan = Saga(gid=gid, notify=target, steps=[
        Step("pay", accounts_host.client.address, "accounts.debit", "accounts.nothing",
             transfer(acct, 10), retry=QUICK),
        Step("too-much", accounts_host.client.address, "accounts.debit", "accounts.refund",
             transfer(acct, 10_000), retry=QUICK)])
    async with running(options) as server, CoordinatorClient(f"127.0.0.1:{server.port}") as c:
        tx = (await c.start_saga(plan, wait=True)).transaction
        assert tx.state == pb.TX_STATE_FAILED
        first = await until_noticed(c, gid)
        assert first.notice.state == pb.NOTICE_STATE_ACKNOWLEDGED and first.notice.generation == 1
        await c.skip(gid, "pay", "refunded by hand")
        tx = await c.wait_settled(gid, 20)
        assert tx.state == pb.TX_STATE_COMPENSATED
        for _ in range(100):
            tx = await c.get(gid)
            if tx.notice.generation == 2 and tx.notice.state != pb.NOTICE_STATE_PENDING:
                break
            await asyncio.sleep(0.1)
    assert tx.notice.state == pb.NOTICE_STATE_ACKNOWLEDGED and tx.notice.generation == 2
    assert [(t.gid, t.state) for t in receiver.seen] == [(gid, pb.TX_STATE_FAILED),
                                                         (gid, pb.TX_STATE_COMPENSATED)]
    assert await noted(db, gid) == 2
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(barrier_table.c.branch).where(
            barrier_table.c.gid == gid, barrier_table.c.branch.like("/notify%")))).scalars().all()
    assert sorted(rows) == ["/notify", "/notify/2"]
