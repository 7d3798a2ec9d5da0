"""Faults across process boundaries: SIGKILL of a coordinator, SIGTERM handover, etcd restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator import CoordinatorClient, Retry, Saga, Step, pb
from coordinator.server import DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import CoordinatorProcess, client_for, two_coordinator_processes
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration
FAST = Retry(initial_backoff_s=0.02, max_backoff_s=0.2)


def slow_saga(p: ScriptedParticipant, gid: str) -> Saga:
    return Saga([Step("a", p.address, "a.do", "a.undo", {}, retry=FAST),
                 Step("b", p.address, "b.do", "b.undo", {"sleep": 1.0}, retry=FAST, timeout_s=5),
                 Step("c", p.address, "c.do", "c.undo", {}, retry=FAST)], gid=gid)


async def wait_for_call(p: ScriptedParticipant, key: str) -> None:
    for _ in range(500):
        if any(c.key == key for c in p.calls):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{key} was never called")


async def test_sigkill_mid_saga_another_coordinator_finishes_it_exactly_once(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, tmp_path: Path) -> None:
    async with two_coordinator_processes(etcd, prefix, tmp_path) as (first, second):
        async with CoordinatorClient(f"127.0.0.1:{first.port}") as c1:
            await c1.start_saga(slow_saga(participant, "killed"))
        await wait_for_call(participant, "killed/b/execute")
        first.kill()  # b's call is in flight; its reply will reach nobody
        async with CoordinatorClient(f"127.0.0.1:{second.port}") as c2:
            tx = await c2.wait_settled("killed")
    assert tx.state == pb.TX_STATE_COMMITTED
    assert dict(participant.effects) == {f"killed/{b}/execute": 1 for b in "abc"}
    keys_for_b = {c.key for c in participant.calls if "/b/" in c.key}
    assert keys_for_b == {"killed/b/execute"}  # the new owner repeated b with the same key


async def test_sigterm_hands_over_at_once(etcd: DevEtcd, prefix: str,
                                          participant: ScriptedParticipant, tmp_path: Path) -> None:
    first = CoordinatorProcess(etcd, prefix, tmp_path)
    try:
        await first.ready()
        async with running(server_options(etcd, prefix)) as other, client_for(other) as c:
            async with CoordinatorClient(f"127.0.0.1:{first.port}") as c1:
                await c1.start_saga(slow_saga(participant, "handover"))
            await wait_for_call(participant, "handover/b/execute")
            assert await asyncio.to_thread(first.terminate) == 0  # b finishes, lease revoked
            tx = await c.wait_settled("handover", 10)
    finally:
        first.stop()
    assert tx.state == pb.TX_STATE_COMMITTED
    assert dict(participant.effects) == {f"handover/{b}/execute": 1 for b in "abc"}


async def test_etcd_restart_under_load_loses_nothing(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    own = DevEtcd().start()  # a private etcd: restarting the shared one would disturb others
    try:
        async with running(server_options(own, prefix)) as server, client_for(server) as c:
            sagas = [Saga([Step("a", participant.address, "a.do", "a.undo", {"sleep": 0.2},
                                retry=FAST),
                           Step("b", participant.address, "b.do", "b.undo", {}, retry=FAST)],
                          gid=f"load-{i}") for i in range(40)]
            await asyncio.gather(*(c.start_saga(s) for s in sagas))
            own.restart()  # calls to a are in flight; their results must still be recorded
            txs = [await c.wait_settled(s.gid, 30) for s in sagas]
    finally:
        own.cleanup()
    assert {tx.state for tx in txs} == {pb.TX_STATE_COMMITTED}
    for s in sagas:
        assert participant.effects[f"{s.gid}/a/execute"] == 1
        assert participant.effects[f"{s.gid}/b/execute"] == 1
