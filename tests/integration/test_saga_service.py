"""Sagas through the gRPC API against a real etcd and real participant servers."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest

from coordinator import ListFilter, Retry, Saga, Step, pb
from coordinator.server import CoordinatorServer, DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import client_for
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration
FAST = Retry(initial_backoff_s=0.01, max_backoff_s=0.05)


def steps(p: ScriptedParticipant, *specs: dict[str, object], names: str = "abcdefgh") -> list[Step]:
    return [Step(names[i], p.address, f"{names[i]}.do", f"{names[i]}.undo", spec, retry=FAST)
            for i, spec in enumerate(specs)]


async def test_happy_path_commits(etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        r = await c.start_saga(Saga(steps(participant, {}, {}), gid="happy"), wait=True)
    assert r.created
    assert r.transaction.state == pb.TX_STATE_COMMITTED
    assert [b.state for b in r.transaction.branches] == [pb.BRANCH_STATE_SUCCEEDED] * 2
    assert participant.ops("execute") == ["a", "b"]
    assert dict(participant.effects) == {"happy/a/execute": 1, "happy/b/execute": 1}


async def test_refusal_compensates_in_reverse_order(etcd: DevEtcd, prefix: str,
                                                    participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        saga = Saga(steps(participant, {}, {}, {"refuse": True}), gid="undo")
        r = await c.start_saga(saga, wait=True)
    assert r.transaction.state == pb.TX_STATE_COMPENSATED
    assert participant.ops("compensate") == ["b", "a"]
    assert [b.state for b in r.transaction.branches] == [
        pb.BRANCH_STATE_COMPENSATED, pb.BRANCH_STATE_COMPENSATED, pb.BRANCH_STATE_FAILED]
    assert "refused by test" in r.transaction.error


async def test_transient_failures_are_retried_then_succeed(etcd: DevEtcd, prefix: str,
                                                           participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        r = await c.start_saga(Saga(steps(participant, {"flaky": 3}, {}), gid="flaky"), wait=True)
    assert r.transaction.state == pb.TX_STATE_COMMITTED
    tries = [(s.key, s.attempt) for s in participant.calls if s.key == "flaky/a/execute"]
    assert tries == [("flaky/a/execute", n) for n in (1, 2, 3, 4)]
    assert participant.effects["flaky/a/execute"] == 1


async def test_duplicate_start_is_idempotent_and_a_different_plan_is_refused(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    saga = Saga(steps(participant, {}), gid="dup")
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        first = await c.start_saga(saga, wait=True)
        again = await c.start_saga(saga)
        assert first.created and not again.created
        assert again.transaction.state == pb.TX_STATE_COMMITTED
        # The same plan: every request field but gid and wait, after defaults (60 s).
        assert not (await c.start_saga(replace(saga, timeout_s=60.0))).created
        for other in (Saga(steps(participant, {"x": 1}), gid="dup"),
                      replace(saga, timeout_s=61.0),
                      replace(saga, labels={"k": "v"}),
                      replace(saga, concurrent=True),
                      replace(saga, steps=[replace(s, timeout_s=9.0) for s in saga.steps])):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.start_saga(other)
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS, other
    assert participant.effects["dup/a/execute"] == 1


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda r: r.ClearField("branches"), "branches"),
    (lambda r: setattr(r.branches[0], "participant", ""), "branches[0].participant"),
    (lambda r: setattr(r.branches[0], "action", ""), "branches[0].action"),
    (lambda r: setattr(r.branches[1], "name", "a"), "branches[1].name"),
    (lambda r: r.branches[0].after.append("nope") or setattr(r, "concurrent", True),
     "branches[0].after"),
    (lambda r: (r.branches[0].after.append("b"), r.branches[1].after.append("a"),
                setattr(r, "concurrent", True)), "branches.after"),
    (lambda r: setattr(r.branches[0], "payload", b"x" * 300_000), "branches[0].payload"),
    (lambda r: r.branches.extend([r.branches[0]] * 70), "branches"),
    (lambda r: setattr(r, "gid", "bad/gid"), "gid"),
])
async def test_invalid_plans_get_invalid_argument_naming_the_field(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    request = Saga(steps(participant, {}, {}), gid="invalid").to_proto()
    mutate(request)
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.start_saga(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith(field + ":")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await c.get("invalid")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was written
        assert "invalid" in (missing.value.details() or "")


async def test_participant_down_for_a_while(etcd: DevEtcd, prefix: str) -> None:
    late = ScriptedParticipant()
    from coordinator.rpc.net import free_port
    port = free_port()
    saga = Saga([Step("a", f"127.0.0.1:{port}", "a.do", "a.undo", {}, retry=FAST, timeout_s=0.5)],
                gid="down")
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        await c.start_saga(saga)
        await asyncio.sleep(1.0)
        tx = await c.get("down")
        assert tx.state == pb.TX_STATE_RUNNING
        assert tx.branches[0].attempts >= 1 and "UNAVAILABLE" in tx.branches[0].error
        await late.start(port)
        try:
            r = await c.start_saga(saga, wait=True, timeout_s=10)
        finally:
            await late.stop()
    assert r.transaction.state == pb.TX_STATE_COMMITTED
    assert late.effects["down/a/execute"] == 1


async def test_deadline_compensates(etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    saga = Saga(steps(participant, {}, {"sleep": 2.0}), gid="slow", timeout_s=0.5)
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        r = await c.start_saga(saga, wait=True)
    assert r.transaction.state == pb.TX_STATE_COMPENSATED
    assert r.transaction.error == "saga deadline exceeded"
    assert set(participant.ops("compensate")) == {"a", "b"}


async def test_concurrent_saga_runs_the_dag(etcd: DevEtcd, prefix: str,
                                            participant: ScriptedParticipant) -> None:
    s = steps(participant, {"sleep": 0.2}, {"sleep": 0.2}, {})
    s[2] = Step("c", participant.address, "c.do", "c.undo", {}, after=("a", "b"), retry=FAST)
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        r = await c.start_saga(Saga(s, gid="dag", concurrent=True), wait=True)
    assert r.transaction.state == pb.TX_STATE_COMMITTED
    starts = {c.key.split("/")[1]: c.at for c in participant.calls}
    assert abs(starts["a"] - starts["b"]) < 0.15  # roots together
    assert participant.ops("execute")[-1] == "c"


async def test_list_get_and_watch(etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        for i in range(5):
            spec = {"refuse": True} if i % 2 else {}
            await c.start_saga(Saga(steps(participant, spec), gid=f"l{i}", labels={"n": str(i)}),
                               wait=True)
        page1 = await c.list(page_size=2)
        page2 = await c.list(page_size=2, page_token=page1.next_page_token)
        assert [t.gid for t in [*page1.transactions, *page2.transactions]] == ["l0", "l1", "l2", "l3"]
        compensated = await c.list(ListFilter(states=[pb.TX_STATE_COMPENSATED]))
        assert [t.gid for t in compensated.transactions] == ["l1", "l3"]
        labelled = await c.list(ListFilter(labels={"n": "4"}))
        assert [t.gid for t in labelled.transactions] == ["l4"]
        await c.start_saga(Saga(steps(participant, {}, {}), gid="l10"))
        prefixed = await c.list(ListFilter(gid_prefix="l1"), page_size=1)
        assert [t.gid for t in prefixed.transactions] == ["l1"] and prefixed.next_page_token
        rest = await c.list(ListFilter(gid_prefix="l1"), page_token=prefixed.next_page_token)
        assert [t.gid for t in rest.transactions] == ["l10"] and not rest.next_page_token
        await c.start_saga(Saga(steps(participant, {"sleep": 0.3}, {}), gid="w"))
        states = [t.state async for t in c.watch("w")]

        assert states[-1] == pb.TX_STATE_COMMITTED and len(states) >= 2


async def test_finished_transactions_expire_after_retention(etcd: DevEtcd, prefix: str,
                                                            participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix, retention_s=2)) as server, \
            client_for(server) as c:
        await c.start_saga(Saga(steps(participant, {}), gid="old"), wait=True)
        assert (await c.get("old")).state == pb.TX_STATE_COMMITTED
        for _ in range(60):
            await asyncio.sleep(0.25)
            try:
                await c.get("old")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
                return
    raise AssertionError("record was not removed after its retention period")


async def test_allow_list_refuses_other_hosts(etcd: DevEtcd, prefix: str,
                                              participant: ScriptedParticipant) -> None:
    from dataclasses import replace
    options = replace(server_options(etcd, prefix), allow_participants=("127.0.0.1:1",))
    async with running(options) as server, client_for(server) as c:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.start_saga(Saga(steps(participant, {}), gid="blocked"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not allowed" in (err.value.details() or "")
    assert participant.calls == []


async def test_health_reports_serving_then_not_serving_on_shutdown(etcd: DevEtcd, prefix: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = CoordinatorServer(server_options(etcd, prefix))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service="txc.v1.Coordinator"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        server.core.accepting = False  # what stop() does first
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async with client_for(server) as c:
                await c.start_saga(Saga([Step("a", "127.0.0.1:1", "a.do")], gid="late"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close(None)
        await server.stop(0.2)


async def test_past_max_active_start_is_resource_exhausted_and_nothing_is_written(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    from dataclasses import replace

    from coordinator.domain.validation import Limits
    options = replace(server_options(etcd, prefix), limits=Limits(max_active=1))
    async with running(options) as server, client_for(server) as c:
        await c.start_saga(Saga(steps(participant, {"sleep": 1.0}), gid="busy-1"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.start_saga(Saga(steps(participant, {}), gid="busy-2"))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_active" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await c.get("busy-2")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        again = await c.start_saga(Saga(steps(participant, {"sleep": 1.0}), gid="busy-1"))
        assert not again.created  # at capacity, an existing gid still answers (idempotent)
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await c.start_saga(Saga(steps(participant, {}), gid="busy-1"))
        assert other.value.code() == grpc.StatusCode.ALREADY_EXISTS
        for _ in range(200):
            if (await c.get("busy-1")).state == pb.TX_STATE_COMMITTED:
                break
            await asyncio.sleep(0.05)
        assert (await c.get("busy-1")).state == pb.TX_STATE_COMMITTED
        await asyncio.sleep(0.1)  # the driver lets go of a finished transaction
        later = await c.start_saga(Saga(steps(participant, {}), gid="busy-2"), wait=True)
        assert later.transaction.state == pb.TX_STATE_COMMITTED
