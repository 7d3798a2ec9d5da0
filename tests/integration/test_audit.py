"""What a compensation and an operator can see (issue #25, item 7), through the API and
txc tx against real etcd: the action's result sent to its compensation, payloads for
operators with the read right, the first cause and attempts kept across replay and skip,
and a null compensation told apart."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from coordinator import CoordinatorClient, Retry, Saga, Step, pb
from coordinator.server import DevEtcd, Operators
from tests.support.coordinators import running, server_options

from .conftest import client_for, txc
from .participant import ScriptedParticipant
from .test_operator import broken_refund
from .test_saga_service import FAST

pytestmark = pytest.mark.integration
ALICE, BOB = "t0ken-for-alice-0123456789", "t0ken-for-bob-00123456789"


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "unary"])
async def test_a_compensation_is_sent_the_result_its_action_answered_with(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, batch: bool) -> None:
    participant.batch = batch
    saga = Saga([Step("a", participant.address, "a.do", "a.undo", {}, retry=FAST),
                 Step("b", participant.address, "b.do", "b.undo", {"refuse": True}, retry=FAST)],
                gid="res")
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        tx = (await c.start_saga(saga, wait=True)).transaction
    assert tx.state == pb.TX_STATE_COMPENSATED
    sent = {c.key: c.action_result for c in participant.calls}
    assert sent["res/a/compensate"] == b"res/a/execute"  # what a's execute answered OK with
    assert sent["res/a/execute"] == b"" and sent["res/b/execute"] == b""


async def test_payloads_are_read_by_operators_with_the_read_right_only(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, tmp_path: Path) -> None:
    operators = Operators.parse(f"alice {ALICE} read,act\nbob {BOB} act")
    options = replace(server_options(etcd, prefix), operators=operators)
    async with running(options) as server, client_for(server) as c:
        await c.start_saga(broken_refund(participant, "held"), wait=True)  # FAILED, kept
        assert not any(b.payload for b in (await c.get("held")).branches)  # not by default
        listed = (await c.list()).transactions
        assert listed and not any(b.payload for t in listed for b in t.branches)
        for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                            (BOB, grpc.StatusCode.PERMISSION_DENIED)):
            async with CoordinatorClient(c.address, token=token) as other:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await other.get("held", include_payloads=True)
            assert err.value.code() == code
        async with CoordinatorClient(c.address, token=ALICE) as alice:
            shown = await alice.get("held", include_payloads=True)
        token_file = tmp_path / "alice.token"
        token_file.write_text(ALICE + "\n")
        code, out, err_text = await txc(server.port, "--token-file", str(token_file), "show",
                                        "held", "--payloads")
        refused, _, no_right = await txc(server.port, "show", "held", "--payloads")
    assert [json.loads(b.payload) for b in shown.branches] == [{"undo_refuse": True},
                                                              {"refuse": True}]
    assert code == 0, err_text
    assert 'payload: {"undo_refuse":true}' in out and 'payload: {"refuse":true}' in out
    assert refused == 1 and "unauthenticated" in no_right


async def test_replay_keeps_the_cause_and_the_attempts_of_settled_branches(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    saga = Saga([Step("a", participant.address, "a.do", "a.undo", {"undo_refuse": True},
                      retry=FAST),
                 Step("b", participant.address, "b.do", "b.undo", {"flaky": 2, "refuse": True},
                      retry=FAST)], gid="audit")
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        failed = (await c.start_saga(saga, wait=True)).transaction
        participant.healed = True
        await c.replay("audit", "refund fixed")
        tx = await c.wait_settled("audit")
    assert failed.state == pb.TX_STATE_FAILED
    assert failed.error == "compensation of a refused: refused by test"
    assert failed.cause == "branch b failed: refused by test"
    assert tx.state == pb.TX_STATE_COMPENSATED
    # It compensated because b refused: the error still says so, and the first cause too.
    assert tx.error == tx.cause == "branch b failed: refused by test"
    assert [b.attempts for b in tx.branches] == [1, 3]  # b's refusal, at its third call
    assert [h.action for h in tx.history] == ["compensate", "failed", "replay"]


async def test_a_null_compensation_is_shown_as_one(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    # b's action gets no answer in time (it is still asleep): its outcome is unknown, so it
    # is compensated, before it has taken effect.
    saga = Saga([Step("a", participant.address, "a.do", "a.undo", {}, retry=FAST),
                 Step("b", participant.address, "b.do", "b.undo", {"sleep": 1.5},
                      timeout_s=0.2, retry=Retry(max_attempts=1))], gid="null")
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        tx = (await c.start_saga(saga, wait=True)).transaction
        _, out, _ = await txc(server.port, "show", "null")
    assert tx.state == pb.TX_STATE_COMPENSATED
    assert [b.null_compensation for b in tx.branches] == [False, True]
    lines = out.splitlines()
    assert any(line.split()[:3] == ["b", "null", "compensation"] for line in lines), out
    assert any(line.split()[:2] == ["a", "compensated"] for line in lines), out
