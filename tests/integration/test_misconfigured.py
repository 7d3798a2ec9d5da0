"""A misconfigured participant shows up within seconds and ends in a state an operator can
act on: UNIMPLEMENTED (no such service or method) and replies without an outcome are not
retried for the whole budget; attempts are counted truly."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from coordinator import Retry, Saga, Step, TwoPhase, pb, ppb, ppb_grpc
from coordinator.server import Context, DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import client_for
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration

PATIENT = Retry(max_attempts=0, initial_backoff_s=0.05, max_backoff_s=0.2)  # budget: 1 hour


class ExecuteOnly(ppb_grpc.ParticipantServicer):
    """Implements Execute only: every other method answers UNIMPLEMENTED (the base class)."""

    async def Execute(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return ppb.BranchReply(outcome=ppb.OUTCOME_OK)


class NoOutcome(ppb_grpc.ParticipantServicer):
    """Answers every call with a reply whose outcome was never set."""

    def __init__(self) -> None:
        self.calls = 0

    async def _reply(self) -> ppb.BranchReply:
        self.calls += 1
        return ppb.BranchReply(message="handler forgot the outcome")

    async def Execute(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return await self._reply()

    async def Compensate(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return await self._reply()

    async def Prepare(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return await self._reply()

    async def Abort(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return await self._reply()


@asynccontextmanager
async def serving(servicer: ppb_grpc.ParticipantServicer | None, port: int = 0
                  ) -> AsyncIterator[str]:
    """A gRPC server on 127.0.0.1; ``None`` registers no Participant service at all."""
    server = grpc.aio.server()
    if servicer is not None:
        ppb_grpc.add_ParticipantServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        await server.stop(0)


def branch(tx: pb.Transaction, name: str) -> pb.BranchStatus:
    return next(b for b in tx.branches if b.name == name)


async def test_an_action_on_a_service_that_is_not_there_compensates_at_once(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with serving(None) as wrong, running(server_options(etcd, prefix)) as server, \
            client_for(server) as c:
        saga = Saga([Step("debit", participant.address, "a.do", "a.undo", retry=PATIENT),
                     Step("order", wrong, "orders.create", "orders.cancel", retry=PATIENT)],
                    gid="wrong-service")
        began = time.monotonic()
        tx = (await c.start_saga(saga, wait=True, timeout_s=20)).transaction
        assert time.monotonic() - began < 5
    assert tx.state == pb.TX_STATE_COMPENSATED
    order = branch(tx, "order")
    assert order.state == pb.BRANCH_STATE_FAILED and order.attempts == 1
    assert wrong in order.error and "UNIMPLEMENTED" in order.error and "Execute" in order.error
    assert participant.effects["wrong-service/debit/compensate"] == 1
    assert branch(tx, "debit").state == pb.BRANCH_STATE_COMPENSATED


async def test_a_compensation_that_is_not_implemented_fails_visibly_and_replays_once_fixed(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        async with serving(ExecuteOnly()) as half:
            saga = Saga([Step("debit", half, "a.do", "a.undo", retry=PATIENT),
                         Step("order", participant.address, "b.do", "b.undo", {"refuse": True},
                              retry=PATIENT)], gid="half-built")
            tx = (await c.start_saga(saga, wait=True, timeout_s=20)).transaction
            assert tx.state == pb.TX_STATE_FAILED
            debit = branch(tx, "debit")
            assert "Compensate" in debit.error and "UNIMPLEMENTED" in debit.error
            assert half in tx.error
            port = int(half.rsplit(":", 1)[1])
        # The service is redeployed with its compensation, on the same address.
        fixed = ScriptedParticipant()
        await fixed.start(port)
        try:
            await c.replay("half-built", "compensation deployed")
            tx = await c.wait_settled("half-built", 20)
        finally:
            await fixed.stop()
    assert tx.state == pb.TX_STATE_COMPENSATED
    assert fixed.effects["half-built/debit/compensate"] == 1


async def test_a_reply_without_outcome_is_undone_because_it_may_have_run(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    broken = NoOutcome()
    async with serving(broken) as address, running(server_options(etcd, prefix)) as server, \
            client_for(server) as c:
        saga = Saga([Step("debit", participant.address, "a.do", "a.undo", retry=PATIENT),
                     Step("order", address, "b.do", "b.undo", retry=PATIENT)], gid="no-outcome")
        tx = (await c.start_saga(saga, wait=True, timeout_s=20)).transaction
    # The action may have applied, so its compensation was called; that too answered no
    # outcome: FAILED for an operator, after one call each. Compensation goes in reverse
    # order, so the debit waits, not yet undone, for the operator.
    assert tx.state == pb.TX_STATE_FAILED
    assert broken.calls == 2
    order = branch(tx, "order")
    assert "OUTCOME_UNSPECIFIED" in order.error and "Compensate" in order.error
    assert order.state == pb.BRANCH_STATE_COMPENSATING
    assert branch(tx, "debit").state == pb.BRANCH_STATE_SUCCEEDED
    assert participant.effects["no-outcome/debit/compensate"] == 0


async def test_two_phase_prepare_on_a_missing_service_aborts_without_an_abort_call(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with serving(None) as wrong, running(server_options(etcd, prefix)) as server, \
            client_for(server) as c:
        tx = (await c.start_two_phase(TwoPhase([
            Step("debit", participant.address, "a.write", retry=PATIENT),
            Step("order", wrong, "orders.create", retry=PATIENT)], gid="2pc-wrong"),
            wait=True, timeout_s=20)).transaction
    assert tx.state == pb.TX_STATE_ABORTED
    assert branch(tx, "order").state == pb.BRANCH_STATE_FAILED
    assert "UNIMPLEMENTED" in branch(tx, "order").error
    assert branch(tx, "debit").state == pb.BRANCH_STATE_ABORTED


async def test_attempts_are_the_true_count(etcd: DevEtcd, prefix: str,
                                           participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        saga = Saga([Step("first", participant.address, "a.do", "a.undo", retry=PATIENT),
                     Step("fourth", participant.address, "b.do", "b.undo", {"flaky": 3},
                          retry=PATIENT)], gid="counted")
        tx = (await c.start_saga(saga, wait=True, timeout_s=20)).transaction
        two_phase = (await c.start_two_phase(TwoPhase([
            Step("p", participant.address, "p.write", payload={"flaky": 2}, retry=PATIENT)],
            gid="counted-2pc"), wait=True, timeout_s=20)).transaction
    assert tx.state == pb.TX_STATE_COMMITTED
    assert branch(tx, "first").attempts == 1 and branch(tx, "fourth").attempts == 4
    assert two_phase.state == pb.TX_STATE_COMMITTED
    # Prepare took 3 calls, then commit 3 more, numbered from 1 again: phase 2's count.
    assert branch(two_phase, "p").attempts == 3
    for op in ("prepare", "commit"):
        numbers = [s.attempt for s in participant.calls if s.key == f"counted-2pc/p/{op}"]
        assert numbers == [1, 2, 3]

