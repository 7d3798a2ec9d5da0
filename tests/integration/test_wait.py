"""Waiting for an outcome: ``wait_settled`` on a gid not started yet, and ``txc tx replay|
skip|abort --wait``, against a real coordinator on real etcd."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from coordinator import Saga, Step, WaitTimedOut, pb
from coordinator.server import DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import client_for, txc
from .participant import ScriptedParticipant
from .test_operator import broken_refund
from .test_saga_service import FAST

pytestmark = pytest.mark.integration


async def test_a_wait_on_a_gid_about_to_start_waits_for_its_start(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        waiting = asyncio.create_task(c.wait_settled("later", timeout_s=10))
        await asyncio.sleep(0.6)  # the wait has met NOT_FOUND by now
        assert not waiting.done()
        await c.start_saga(Saga([Step("a", participant.address, "a.do", "a.undo", {},
                                      retry=FAST)], gid="later"))
        tx = await waiting
    assert tx.state == pb.TX_STATE_COMMITTED


async def test_a_wait_on_a_gid_never_started_ends_at_its_deadline_not_at_once(
        etcd: DevEtcd, prefix: str) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        began = time.monotonic()
        with pytest.raises(WaitTimedOut) as caught:
            await c.wait_settled("never", timeout_s=1.5)
    took = time.monotonic() - began
    assert 1.5 <= took < 3.0
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(caught.value, TimeoutError)  # what waits have always raised
    assert caught.value.details() == "transaction 'never' was not started within 1.5 s " \
                                     "(not found until then)"
    assert caught.value.transaction is None


async def test_a_wait_on_a_transaction_that_does_not_settle_says_where_it_stands(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        await c.start_saga(Saga([Step("a", participant.address, "a.do", "a.undo", {"sleep": 3},
                                      retry=FAST)], gid="slow"))
        with pytest.raises(WaitTimedOut) as caught:
            await c.wait_settled("slow", timeout_s=0.5)
        assert "did not settle within 0.5 s: RUNNING" in (caught.value.details() or "")
        assert caught.value.transaction is not None
        assert (await c.wait_settled("slow", timeout_s=10)).state == pb.TX_STATE_COMMITTED


async def test_replay_skip_and_abort_wait_for_the_outcome(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        for gid in ("w1", "w2"):
            await c.start_saga(broken_refund(participant, gid), wait=True)
        port = server.port

        # Replay without the fix: it fails again, and --wait says so (exit 5).
        code, out, err = await txc(port, "replay", "w1", "--reason", "try again", "--wait")
        assert code == 5 and out.startswith("w1  saga  FAILED"), out
        assert "compensation of a refused" in out

        participant.healed = True
        code, out, _ = await txc(port, "replay", "w1", "--reason", "fixed", "--wait")
        assert code == 0 and out.startswith("w1  saga  COMPENSATED"), out
        assert "attempts=1" in out  # the outcome, not the snapshot taken at once (attempts=0)

        # Skip the refund done by hand: the error shown is why the saga compensated, not
        # the skipped branch's old refusal; both stay in the history.
        code, out, _ = await txc(port, "skip", "w2", "a", "--reason", "refunded by hand", "--wait")
        assert code == 0 and out.startswith("w2  saga  COMPENSATED"), out
        assert "  error: branch b failed: refused by test" in out
        history = out.split("  history:")[1]
        assert "compensation of a refused" in history and "a: refunded by hand" in history

        await c.start_saga(Saga([Step("a", participant.address, "a.do", "a.undo",
                                      {"sleep": 30}, retry=FAST)], gid="w3"))
        code, out, _ = await txc(port, "abort", "w3", "--reason", "customer cancelled", "--wait")
        assert code == 0 and out.startswith("w3  saga  COMPENSATED"), out

        code, _, err = await txc(port, "replay", "--all", "--reason", "x", "--wait")
        assert code == 2 and "give a GID" in err


async def test_a_wait_that_runs_out_shows_where_it_stands_and_exits_5(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        await c.start_saga(Saga([Step("a", participant.address, "a.do", "a.undo",
                                      {"sleep": 30, "compensate_sleep": 30}, retry=FAST)], gid="w4"))
        code, out, err = await txc(server.port, "abort", "w4", "--reason", "cancel", "--wait",
                                   "--wait-timeout", "1")
        assert code == 5 and out.startswith("w4  saga  COMPENSATING"), out
        assert "did not settle within 1 s: COMPENSATING" in err
