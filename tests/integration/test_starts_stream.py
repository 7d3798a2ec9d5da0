"""The Starts stream: many starts per message, each answered as its unary method would
answer it; a client uses it when the coordinator has it and unary otherwise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import grpc
import pytest

from coordinator import CoordinatorClient, Saga, Step, TwoPhase, pb
from coordinator._proto.txc.v1 import coordinator_pb2_grpc as pb_grpc
from coordinator.server import CoordinatorServer, DevEtcd
from tests.participant._receiver import SagaReceiver
from tests.support.coordinators import running, server_options
from tests.support.metrics import value

from .participant import ScriptedParticipant
from .test_metrics import scrape

pytestmark = pytest.mark.integration


def saga(p: ScriptedParticipant, gid: str, payload: dict[str, object] | None = None) -> Saga:
    return Saga([Step("a", p.address, "a.do", "a.undo", payload or {})], gid=gid)


@asynccontextmanager
async def with_metrics(etcd: DevEtcd, prefix: str) -> AsyncIterator[CoordinatorServer]:
    async with running(replace(server_options(etcd, prefix), metrics_listen="127.0.0.1:0")) as s:
        yield s


async def test_a_client_starts_over_the_stream_and_the_unary_methods_stay_unused(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with with_metrics(etcd, prefix) as server, \
            CoordinatorClient(f"127.0.0.1:{server.port}") as client:
        replies = await asyncio.gather(
            *(client.start_saga(saga(participant, f"st-{i}"), wait=True) for i in range(40)),
            *(client.start_two_phase(TwoPhase([Step("a", participant.address, "a.do")],
                                              gid=f"st2-{i}"), wait=True) for i in range(10)))
        again = await client.start_saga(saga(participant, "st-0"))
        samples = await scrape(server.metrics_port)
    assert [r.transaction.state for r in replies] == [pb.TX_STATE_COMMITTED] * 50
    assert all(r.created for r in replies) and not again.created  # idempotent, as unary
    assert value(samples, "txc_transactions_started_total", protocol="saga") == 40
    for method in ("StartSaga", "StartTwoPhase"):
        assert value(samples, "txc_grpc_server_requests_total",
                     method=f"/txc.v1.Coordinator/{method}", code="OK") == 0


async def test_each_start_is_answered_on_its_own_as_its_transaction_settles(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, \
            CoordinatorClient(f"127.0.0.1:{server.port}") as client:
        began = time.monotonic()
        slow = asyncio.ensure_future(client.start_saga(saga(participant, "slow", {"sleep": 1.0}),
                                                       wait=True))
        quick = await client.start_saga(saga(participant, "quick"), wait=True)
        quick_after = time.monotonic() - began
        refused = client.start_saga(Saga([Step("a", "", "a.do")], gid="bad"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await refused
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "participant" in (err.value.details() or "")
        assert (await slow).transaction.state == pb.TX_STATE_COMMITTED
    assert quick.transaction.state == pb.TX_STATE_COMMITTED and quick_after < 0.8


async def test_the_stream_as_any_grpc_client_sees_it(etcd: DevEtcd, prefix: str,
                                                     participant: ScriptedParticipant) -> None:
    """Several calls in one message, results tagged by id; a call naming no start and an
    invalid plan are refused alone, as the unary methods would refuse them."""
    async with running(server_options(etcd, prefix)) as server:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        call = pb_grpc.CoordinatorStub(channel).Starts()  # type: ignore[call-arg]
        good = saga(participant, "wire-1").to_proto(wait=True)
        await call.write(pb.StartCallBatch(calls=[
            pb.StartCall(id=7, saga=good, timeout_ms=5000),
            pb.StartCall(id=8),
            pb.StartCall(id=9, two_phase=pb.StartTwoPhaseRequest(gid="wire-2")),
        ]))
        results: dict[int, pb.StartResult] = {}
        while len(results) < 3:
            message = await asyncio.wait_for(call.read(), 10)
            results.update({r.id: r for r in message.results})
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
        await channel.close()
    assert results[7].status_code == 0
    assert results[7].response.transaction.state == pb.TX_STATE_COMMITTED
    assert results[8].status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "start" in results[8].status_message
    assert results[9].status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "branches" in results[9].status_message


async def test_a_coordinator_without_the_stream_is_started_unary() -> None:
    receiver = SagaReceiver()
    target = await receiver.start()
    try:
        async with CoordinatorClient(target) as client:
            for i in range(3):
                reply = await client.start_saga(Saga([Step("a", "h:1", "a.do")], gid=f"old-{i}"))
                assert reply.transaction.gid == f"old-{i}"
    finally:
        await receiver.stop()
    assert [receiver.calls[f"old-{i}"] for i in range(3)] == [1, 1, 1]
