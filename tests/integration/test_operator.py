"""Operator actions through the API: replay, skip and abort, against real etcd."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from coordinator import CoordinatorClient, ListFilter, Saga, Step, pb
from coordinator.server import DevEtcd, Operators
from tests.support.coordinators import running, server_options

from .conftest import client_for, txc
from .participant import ScriptedParticipant
from .test_saga_service import FAST

pytestmark = pytest.mark.integration


def broken_refund(p: ScriptedParticipant, gid: str) -> Saga:
    return Saga([Step("a", p.address, "a.do", "a.undo", {"undo_refuse": True}, retry=FAST),
                 Step("b", p.address, "b.do", "b.undo", {"refuse": True}, retry=FAST)], gid=gid)


async def test_failed_saga_is_replayed_after_the_fix_each_effect_once(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        r = await c.start_saga(broken_refund(participant, "stuck"), wait=True)
        assert r.transaction.state == pb.TX_STATE_FAILED
        listed = await c.list(ListFilter(states=[pb.TX_STATE_FAILED]))
        assert [t.gid for t in listed.transactions] == ["stuck"]
        participant.healed = True
        async with CoordinatorClient(c.address, actor="ann@ops") as ann:
            await ann.replay("stuck", "refund fixed")
        tx = await c.wait_settled("stuck")
    assert tx.state == pb.TX_STATE_COMPENSATED
    assert participant.effects["stuck/a/compensate"] == 1
    assert participant.effects["stuck/a/execute"] == 1
    replay = [h for h in tx.history if h.action == "replay"]
    assert replay and replay[0].actor == "operator:ann@ops" and replay[0].reason == "refund fixed"


async def test_skip_and_abort_in_allowed_and_forbidden_states(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        await c.start_saga(broken_refund(participant, "skipme"), wait=True)
        tx = await c.skip("skipme", "a", "refunded by hand")
        assert tx.state == pb.TX_STATE_COMPENSATED
        for call in (c.skip("skipme", "a", "x"), c.abort("skipme", "x")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.replay("nope", "x")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.abort("skipme", "")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith("reason")
        slow = Saga([Step("a", participant.address, "a.do", "a.undo", {}, retry=FAST),
                     Step("b", participant.address, "b.do", "b.undo", {"sleep": 1.0}, retry=FAST)],
                    gid="cancel-me")
        await c.start_saga(slow)
        aborted = await c.abort("cancel-me", "customer")
        assert aborted.state in (pb.TX_STATE_COMPENSATING, pb.TX_STATE_COMPENSATED)
        tx = await c.wait_settled("cancel-me")
    assert tx.state == pb.TX_STATE_COMPENSATED
    assert participant.effects["cancel-me/a/compensate"] == 1


async def test_with_operator_tokens_actions_need_one_and_the_history_names_its_owner(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, tmp_path: Path) -> None:
    token = "t0ken-for-alice-0123456789"
    options = replace(server_options(etcd, prefix), operators=Operators.parse(f"alice {token}"))
    async with running(options) as server, client_for(server) as c:
        await c.start_saga(broken_refund(participant, "locked"), wait=True)
        assert (await c.get("locked")).state == pb.TX_STATE_FAILED  # reads need no token
        for wrong in (None, "not-the-token-at-all"):
            async with CoordinatorClient(c.address, token=wrong, actor="alice") as intruder:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await intruder.skip("locked", "a", "refunded by hand")
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert token not in (err.value.details() or "")
        assert (await c.get("locked")).state == pb.TX_STATE_FAILED  # refused: nothing done

        token_file = tmp_path / "alice.token"
        token_file.write_text(token + "\n")
        code, _, err_text = await txc(server.port, "skip", "locked", "a", "--reason", "by hand")
        assert code == 1 and "unauthenticated" in err_text
        code, out, _ = await txc(server.port, "--token-file", str(token_file),
                                 "skip", "locked", "a", "--reason", "refunded by hand")
        assert code == 0, out
        tx = await c.get("locked")
    assert tx.state == pb.TX_STATE_COMPENSATED
    skip = [h for h in tx.history if h.action == "skip"]
    assert skip and skip[0].actor.startswith("operator:alice (") and skip[0].reason == "a: refunded by hand"
