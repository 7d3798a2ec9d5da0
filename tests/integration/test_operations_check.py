"""Participants that do not list their operations start exactly as before: one without the
optional ``Operations`` call (UNIMPLEMENTED), one that never answers it, one that is not
there. None is refused, and none holds a start longer than one probe's deadline, once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from coordinator import Retry, Saga, Step, pb, ppb
from coordinator.engine import OperationsCheck
from coordinator.rpc.net import free_port
from coordinator.server import Context, DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import client_for
from .participant import ScriptedParticipant

PROBE_S = OperationsCheck().probe_timeout_s


@dataclass
class Silent(ScriptedParticipant):
    """Serves every call, but its Operations never answers."""

    asked: int = 0

    async def Operations(self, request: ppb.OperationsRequest,
                         context: Context) -> ppb.OperationsReply:
        self.asked += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def saga(gid: str, address: str) -> Saga:
    return Saga(gid=gid, steps=[Step("pay", address, "any.name", "any.undo",
                                     retry=Retry(max_attempts=1), timeout_s=0.5)])


async def test_a_participant_without_the_call_is_not_checked(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, gid: str) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        tx = (await c.start_saga(saga(gid, participant.address), wait=True)).transaction
    assert tx.state == pb.TX_STATE_COMMITTED
    assert participant.effects[f"{gid}/pay/execute"] == 1


async def test_a_participant_that_never_answers_holds_a_start_one_probe_deadline_once(
        etcd: DevEtcd, prefix: str, gid: str) -> None:
    silent = await Silent().start()
    try:
        async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
            for i in range(3):
                began = time.monotonic()
                tx = (await c.start_saga(saga(f"{gid}-{i}", f"127.0.0.1:{silent.port}"),
                                         wait=True)).transaction
                took = time.monotonic() - began
                assert tx.state == pb.TX_STATE_COMMITTED
                assert took < (PROBE_S + 1.0 if i == 0 else 1.0), (i, took)
    finally:
        await silent.stop()
    assert silent.asked == 1  # cached for the time-to-live


async def test_a_participant_that_is_not_there_does_not_hold_a_start(
        etcd: DevEtcd, prefix: str, gid: str) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        began = time.monotonic()
        reply = await c.start_saga(saga(gid, nowhere))
        assert time.monotonic() - began < PROBE_S + 0.5
    assert reply.created
