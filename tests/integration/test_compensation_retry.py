"""A compensation is owed once the saga turns back: the action's attempt cap does not cap it
(issue #25, item 1). On real processes: a coordinator (txc serve) and a participant process
that is down for 10 s while its compensation is due."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator import CoordinatorClient, Retry, Saga, Step, pb
from coordinator.rpc.net import free_port
from coordinator.server import DevEtcd
from tests.support.processes import Child

from .conftest import CoordinatorProcess
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration
CHILD = "tests.integration._participant_child"
DOWN_S = 10.0


async def until_branch(c: CoordinatorClient, gid: str, state: int) -> None:
    for _ in range(300):
        tx = await c.get(gid)
        if tx.branches[0].state == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{gid}: branch {tx.branches[0].name} never reached {state}: {tx}")


async def test_a_compensation_outlasts_its_participant_down_whatever_the_actions_cap(
        etcd: DevEtcd, prefix: str, gid: str, participant: ScriptedParticipant,
        tmp_path: Path) -> None:
    port = free_port()
    pay = Child(tmp_path / "pay-1.log", CHILD, "serve", str(port))
    coordinator = CoordinatorProcess(etcd, prefix, tmp_path)
    try:
        assert await pay.line() == f"serving {port}"
        await coordinator.ready()
        saga = Saga([
            # The README's shape: an attempt cap on the action, nothing said of the undo.
            Step("pay", f"127.0.0.1:{port}", "pay.charge", "pay.refund", {},
                 retry=Retry(max_attempts=3)),
            # Refused 2 s later: by then the payments service is down.
            Step("ship", participant.address, "ship.do", "ship.undo",
                 {"sleep": 2.0, "refuse": True}),
        ], gid=gid)
        async with CoordinatorClient(f"127.0.0.1:{coordinator.port}") as c:
            await c.start_saga(saga)
            await until_branch(c, gid, pb.BRANCH_STATE_SUCCEEDED)
            pay.kill()
            await until_branch(c, gid, pb.BRANCH_STATE_COMPENSATING)
            await asyncio.sleep(DOWN_S)
            while_down = await c.get(gid)
            pay = Child(tmp_path / "pay-2.log", CHILD, "serve", str(port))  # back, same address
            assert await pay.line() == f"serving {port}"
            tx = await c.wait_settled(gid, 60)
    finally:
        pay.kill()
        coordinator.stop()
    assert while_down.state == pb.TX_STATE_COMPENSATING, while_down.error  # not FAILED
    assert tx.state == pb.TX_STATE_COMPENSATED, tx.error
    assert tx.branches[0].state == pb.BRANCH_STATE_COMPENSATED
    assert tx.branches[0].attempts > 3  # past the action's cap, with the same key
