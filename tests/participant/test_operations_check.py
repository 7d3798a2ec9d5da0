"""A misnamed operation against a real coordinator and the SDK host on PostgreSQL and
MariaDB: refused at the start (the host lists its operations) before anything runs, and,
when the start is not checked, read as a misconfigured participant, not as the business
saying no. A participant without the ``Operations`` call, or one that is not there, starts
as before."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest

from coordinator import CoordinatorClient, Retry, Saga, Step, pb
from coordinator.engine import OperationsCheck
from coordinator.server import DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import Db
from .test_host import Served, account, build_host, serve, transfer

pytestmark = pytest.mark.integration

PATIENT = Retry(max_attempts=0, initial_backoff_s=0.05, max_backoff_s=0.2)


@pytest.fixture
async def served(db: Db) -> AsyncIterator[Served]:
    s = await serve(build_host(db.engine))
    yield s
    await s.close()


def step(name: str, address: str, action: str, compensation: str, payload: bytes) -> Step:
    return Step(name, address, action, compensation, payload, retry=PATIENT)


async def test_a_start_naming_an_operation_the_host_does_not_serve_is_refused_before_it_runs(
        db: Db, served: Served, etcd: DevEtcd, prefix: str, gid: str) -> None:
    address = served.client.address
    acct = await account(db, 100)
    async with running(server_options(etcd, prefix)) as server, \
            CoordinatorClient(f"127.0.0.1:{server.port}") as c:
        for action, compensation, field in (("accounts.debitt", "accounts.refund", "action"),
                                            ("accounts.debit", "accounts.refnd", "compensation")):
            saga = Saga(gid=gid, steps=[
                step("ok", address, "accounts.debit", "accounts.refund", transfer(acct, 10)),
                step("pay", address, action, compensation, transfer(acct, 10))])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await c.start_saga(saga, wait=True)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = str(refused.value.details())
            assert f"branches[1].{field}" in details and "'pay'" in details
            assert (action if field == "action" else compensation) in details
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await c.get(gid)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was written
        assert await db.count_effects(gid) == 0
        fine = Saga(gid=gid, steps=[step("pay", address, "accounts.debit", "accounts.refund",
                                         transfer(acct, 10))])
        tx = (await c.start_saga(fine, wait=True, timeout_s=20)).transaction
    assert tx.state == pb.TX_STATE_COMMITTED


async def test_unchecked_a_misnamed_compensation_is_a_misconfiguration_for_an_operator(
        db: Db, served: Served, etcd: DevEtcd, prefix: str, gid: str) -> None:
    """Without the check, the host answers UNIMPLEMENTED: the coordinator does not retry it
    and does not take it for a refusal; the error says what is wrong and where."""
    address = served.client.address
    acct = await account(db, 100)
    options = replace(server_options(etcd, prefix), operations=OperationsCheck(enabled=False))
    async with running(options) as server, CoordinatorClient(f"127.0.0.1:{server.port}") as c:
        saga = Saga(gid=gid, steps=[
            step("debit", address, "accounts.debit", "accounts.refnd", transfer(acct, 10)),
            step("pay", address, "accounts.debit", "accounts.refund", transfer(acct, 1000))])
        began = time.monotonic()
        tx = (await c.start_saga(saga, wait=True, timeout_s=20)).transaction
        assert time.monotonic() - began < 5  # not retried for the compensation budget
        misnamed = (await c.start_saga(Saga(gid=f"{gid}-x", steps=[
            step("pay", address, "accounts.charg", "accounts.refund", transfer(acct, 1))]),
            wait=True, timeout_s=20)).transaction
    assert tx.state == pb.TX_STATE_FAILED  # for an operator, not compensated as refused
    debit = next(b for b in tx.branches if b.name == "debit")
    assert debit.attempts == 1 and "misconfigured participant" in debit.error
    assert "unknown operation 'accounts.refnd' for compensate" in debit.error
    assert misnamed.state == pb.TX_STATE_COMPENSATED
    assert "misconfigured participant" in misnamed.error
    assert "unknown operation 'accounts.charg'" in misnamed.error
