"""The coordinator's Batch transport: calls share stream messages under load, a
participant without the stream is called unary (remembered), a lost stream's calls are
retried with their keys, and the unary transport still works."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from coordinator import Retry, Saga, Step, TwoPhase, pb
from coordinator.server import DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import client_for
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration

FAST = Retry(max_attempts=0, initial_backoff_s=0.02, max_backoff_s=0.2)


def saga(p: ScriptedParticipant, gid: str, spec: dict[str, object] | None = None) -> Saga:
    return Saga([Step("a", p.address, "a.do", "a.undo", spec or {}, retry=FAST),
                 Step("b", p.address, "b.do", "b.undo", {}, retry=FAST)], gid=gid)


async def test_concurrent_calls_share_messages_on_one_stream(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        replies = await asyncio.gather(*(c.start_saga(saga(participant, f"s{i}"), wait=True)
                                         for i in range(64)))
        tp = await c.start_two_phase(TwoPhase([Step("p", participant.address, "p.write",
                                                    payload={}, retry=FAST)], gid="tp"), wait=True)
    assert {r.transaction.state for r in replies} == {pb.TX_STATE_COMMITTED}
    assert tp.transaction.state == pb.TX_STATE_COMMITTED
    assert participant.streams == 1
    assert sum(participant.batches) >= 64 * 2 + 2  # every call went on the stream
    assert max(participant.batches) > 1  # and calls ready together shared a message
    assert all(participant.effects[f"s{i}/{b}/execute"] == 1 for i in range(64) for b in "ab")


async def test_a_participant_without_the_stream_is_called_unary_and_that_is_remembered(
        etcd: DevEtcd, prefix: str) -> None:
    unary_only = await ScriptedParticipant(batch=False).start()
    try:
        async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
            for i in range(5):
                reply = await c.start_saga(saga(unary_only, f"u{i}"), wait=True)
                assert reply.transaction.state == pb.TX_STATE_COMMITTED
    finally:
        await unary_only.stop()
    assert unary_only.streams == 1 and not unary_only.batches  # asked once, then unary
    assert all(unary_only.effects[f"u{i}/a/execute"] == 1 for i in range(5))


async def test_calls_lost_with_their_stream_are_retried_with_the_same_keys(
        etcd: DevEtcd, prefix: str) -> None:
    first = await ScriptedParticipant().start()
    port = first.port
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        started = asyncio.create_task(c.start_saga(saga(first, "cut", {"sleep": 1.0}), wait=True,
                                                   timeout_s=30))
        while not first.calls:
            await asyncio.sleep(0.01)
        await first.stop()  # the stream breaks with a call in flight
        second = await ScriptedParticipant().start(port)
        second.effects.update(first.effects)  # the same service's database, back up
        second.replies.update(first.replies)
        try:
            reply = await started
        finally:
            await second.stop()
    assert reply.transaction.state == pb.TX_STATE_COMMITTED
    assert second.effects["cut/a/execute"] == 1 and second.effects["cut/b/execute"] == 1
    assert second.streams >= 1  # a new stream to the restarted participant


async def test_the_unary_transport_is_still_there(etcd: DevEtcd, prefix: str,
                                                  participant: ScriptedParticipant) -> None:
    options = replace(server_options(etcd, prefix), participant_transport="unary")
    async with running(options) as server, client_for(server) as c:
        reply = await c.start_saga(saga(participant, "plain"), wait=True)
    assert reply.transaction.state == pb.TX_STATE_COMMITTED
    assert participant.streams == 0
