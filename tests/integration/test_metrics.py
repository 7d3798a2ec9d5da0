"""Prometheus metrics, read the way Prometheus reads them: by scraping /metrics over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from coordinator import Saga, Step, pb
from coordinator.rpc.net import free_port
from coordinator.server import CoordinatorServer, DevEtcd
from tests.support.coordinators import running, server_options
from tests.support.metrics import Samples, parse, value

from .conftest import CoordinatorProcess, client_for
from .participant import ScriptedParticipant
from .test_operator import broken_refund
from .test_saga_service import FAST, steps

pytestmark = pytest.mark.integration


async def scrape(port: int) -> Samples:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    return parse(await asyncio.to_thread(get))


async def test_sagas_against_txc_serve_move_the_counters_and_histograms(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, tmp_path: Path) -> None:
    port = free_port()
    coordinator = CoordinatorProcess(etcd, prefix, tmp_path,
                                     env={"TXC_METRICS_LISTEN": f"127.0.0.1:{port}"})
    try:
        await coordinator.ready()
        before = await scrape(port)
        async with client_for(coordinator.port) as c:
            ok = await c.start_saga(Saga(steps(participant, {"flaky": 1}, {}), gid="m-ok"), wait=True)
            undone = await c.start_saga(Saga(steps(participant, {}, {"refuse": True}), gid="m-undo"),
                                        wait=True)
        after = await scrape(port)
    finally:
        coordinator.stop()
    assert ok.transaction.state == pb.TX_STATE_COMMITTED
    assert undone.transaction.state == pb.TX_STATE_COMPENSATED
    assert value(before, "txc_transactions_started_total", protocol="saga") == 0
    assert value(after, "txc_transactions_started_total", protocol="saga") == 2
    for state in ("COMMITTED", "COMPENSATED"):
        assert value(after, "txc_transactions_finished_total", protocol="saga", state=state) == 1
        assert value(after, "txc_transaction_duration_seconds_count", protocol="saga",
                     state=state) == 1
        assert value(after, "txc_transaction_duration_seconds_sum", protocol="saga",
                     state=state) > 0
    assert value(after, "txc_transactions_in_flight", protocol="saga") == 0
    calls = {(op, outcome): value(after, "txc_branch_calls_total", op=op, outcome=outcome)
             for op, outcome in (("execute", "ok"), ("execute", "unknown"),
                                 ("execute", "failed"), ("compensate", "ok"))}
    # m-ok: a (RETRY, then ok), b ok; m-undo: a ok, b refused, a compensated.
    assert calls == {("execute", "ok"): 3, ("execute", "unknown"): 1, ("execute", "failed"): 1,
                     ("compensate", "ok"): 1}
    assert value(after, "txc_branch_call_duration_seconds_count", op="execute") == 5
    assert value(after, "txc_etcd_requests_total", kind="create", outcome="ok") >= 1
    assert value(after, "txc_etcd_requests_total", kind="write", outcome="ok") >= 2
    assert value(after, "txc_etcd_request_duration_seconds_count", kind="write") >= 2
    # The client starts over the Starts stream: each start counts as a call of Starts.
    assert value(after, "txc_grpc_server_requests_total", method="/txc.v1.Coordinator/Starts",
                 code="OK") == 2
    assert value(after, "txc_grpc_server_handling_seconds_count",
                 method="/txc.v1.Coordinator/Starts") == 2


async def test_failed_gauge_operator_actions_and_admission_refusals(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    options = replace(server_options(etcd, prefix), metrics_listen="127.0.0.1:0",
                      failed_count_interval_s=0.1)
    options = replace(options, limits=replace(options.limits, max_active=1))
    async with running(options) as server, client_for(server) as c:
        port = server.metrics_port
        await c.start_saga(broken_refund(participant, "m-stuck"), wait=True)
        await until(port, "txc_transactions_failed", 1)
        slow = Saga([Step("a", participant.address, "a.do", "a.undo", {"sleep": 1.0}, retry=FAST)],
                    gid="m-slow")
        await c.start_saga(slow)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.start_saga(Saga(steps(participant, {}), gid="m-refused"))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await c.wait_settled("m-slow")
        participant.healed = True
        await c.replay("m-stuck", "refund fixed")
        with pytest.raises(grpc.aio.AioRpcError):
            await c.abort("m-stuck", "too late")  # compensated by now, or on its way: refused
        await c.wait_settled("m-stuck")
        samples = await until(port, "txc_transactions_failed", 0)
    assert value(samples, "txc_admission_refused_total") == 1
    assert value(samples, "txc_operator_actions_total", action="replay", outcome="done") == 1
    assert value(samples, "txc_operator_actions_total", action="abort", outcome="refused") == 1
    assert value(samples, "txc_transactions_finished_total", protocol="saga", state="FAILED") == 1
    assert value(samples, "txc_grpc_server_requests_total", method="/txc.v1.Coordinator/Starts",
                 code="RESOURCE_EXHAUSTED") == 1


async def test_takeover_is_counted_by_the_coordinator_that_claims(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, tmp_path: Path) -> None:
    first = CoordinatorProcess(etcd, prefix, tmp_path)
    options = replace(server_options(etcd, prefix), metrics_listen="127.0.0.1:0")
    try:
        await first.ready()
        async with client_for(first.port) as c1:
            await c1.start_saga(Saga([Step("a", participant.address, "a.do", "a.undo",
                                           {"sleep": 1.0}, retry=FAST)], gid="m-orphan"))
        first.kill()
        async with running(options) as second, client_for(second) as c2:
            assert (await c2.wait_settled("m-orphan")).state == pb.TX_STATE_COMMITTED
            # The client can see the final write before the coordinator has counted it.
            for _ in range(50):
                samples = await scrape(second.metrics_port)
                if value(samples, "txc_transactions_finished_total", protocol="saga",
                         state="COMMITTED") == 1:
                    break
                await asyncio.sleep(0.1)

    finally:
        first.stop()
    assert value(samples, "txc_takeovers_total") == 1
    assert value(samples, "txc_transactions_finished_total", protocol="saga", state="COMMITTED") == 1
    assert value(samples, "txc_transactions_started_total", protocol="saga") == 0


async def test_metrics_are_off_by_default(etcd: DevEtcd, prefix: str) -> None:
    server = CoordinatorServer(server_options(etcd, prefix))
    assert server.metrics_port == 0
    assert type(server.metrics).__name__ == "Metrics"  # the no-op


async def until(port: int, name: str, wanted: float, within_s: float = 10.0) -> Samples:
    """The scrape in which ``name`` (no labels) first reads ``wanted``."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        samples = await scrape(port)
        if value(samples, name) == wanted or asyncio.get_running_loop().time() > deadline:
            assert value(samples, name) == wanted, f"{name} stayed {value(samples, name)}"
            return samples
        await asyncio.sleep(0.1)
