"""Operators in control, on real coordinators and real etcd: a participant held while sagas
and 2PCs are in flight (through a coordinator's death and a restart), transactions paused
and resumed, and bulk replays chosen by label and by participant."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from coordinator import CoordinatorClient, Retry, Saga, Step, TwoPhase, pb
from coordinator.server import DevEtcd, Operators
from tests.support.coordinators import running, server_options

from .conftest import CoordinatorProcess, client_for, two_coordinator_processes, txc
from .participant import ScriptedParticipant
from .test_saga_service import FAST

pytestmark = pytest.mark.integration
ACT_TOKEN, READ_TOKEN = "holds-act-token-0123456789", "holds-read-token-0123456789"

POLL_S = 1.0  # txc serve's default hold_poll_s: a hold is in force everywhere within it
TIMEOUT_S = 3.0  # each transaction's deadline: the hold lasts much longer
SLOW = Retry(initial_backoff_s=0.2, max_backoff_s=0.4)


async def txc_participant(port: int, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator.cli", "participant", *args, "--coordinator",
        f"127.0.0.1:{port}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _plans(p: ScriptedParticipant, count: int) -> list[Saga | TwoPhase]:
    """Two-branch transactions whose second branch answers RETRY until the participant is
    healed: each is retrying a call there (saga RUNNING, 2PC PREPARING) when the hold comes."""
    plans: list[Saga | TwoPhase] = []
    for i in range(count):
        plans.append(Saga([Step("a", p.address, "a.do", "a.undo", {}, retry=SLOW),
                           Step("b", p.address, "b.do", "b.undo", {"flaky": 1000}, retry=SLOW)],
                          gid=f"held-saga-{i}", timeout_s=TIMEOUT_S))
        plans.append(TwoPhase([Step("a", p.address, "a.do", payload={}, retry=SLOW),
                               Step("b", p.address, "b.do", payload={"flaky": 1000}, retry=SLOW)],
                              gid=f"held-2pc-{i}", timeout_s=TIMEOUT_S))
    return plans


async def test_a_hold_outlasts_deadlines_a_takeover_and_a_restart_then_all_finish(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, tmp_path: Path) -> None:
    async with two_coordinator_processes(etcd, prefix, tmp_path) as (first, second), \
            CoordinatorClient([f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]) as c:
        plans = _plans(participant, 4)
        for plan in plans:
            await (c.start_saga(plan) if isinstance(plan, Saga) else c.start_two_phase(plan))
        code, out, err = await txc_participant(first.port, "hold", participant.address,
                                               "--reason", "db maintenance")
        assert code == 0, err
        assert f"held {participant.address}" in out
        in_force = time.monotonic() + POLL_S + 0.2  # every coordinator has read it by then
        await asyncio.sleep(TIMEOUT_S + 1.5)  # every deadline as started has passed

        first.kill()  # its transactions go to the second coordinator, still held
        third = CoordinatorProcess(etcd, prefix, tmp_path)  # and a restart joins
        try:
            await third.ready()
            await asyncio.sleep(4.0)  # the lease (2 s) runs out; orphans are claimed
            late = [s for s in participant.calls if s.at > in_force]
            assert late == [], f"calls made while held: {late[:3]}"
            for plan in plans:
                tx = await c.get(plan.gid)
                assert tx.state in (pb.TX_STATE_RUNNING, pb.TX_STATE_PREPARING), (plan.gid, tx)
                assert list(tx.waiting_on_holds) == [participant.address]
            code, out, _ = await txc(third.port, "show", "held-saga-0")
            assert "waiting on held participant(s): " + participant.address in out
            assert "standing still" in out
            code, out, _ = await txc_participant(third.port, "holds")
            assert participant.address in out and "db maintenance" in out

            participant.healed = True  # the maintenance is over
            code, out, err = await txc_participant(third.port, "release", participant.address,
                                                   "--reason", "db back")
            assert code == 0, err
            for plan in plans:
                tx = await c.wait_settled(plan.gid, 30)
                assert tx.state == pb.TX_STATE_COMMITTED, (plan.gid, tx.error)
                assert tx.deadline_moved.ToTimedelta().total_seconds() > TIMEOUT_S
                assert "hold released" in [h.action for h in tx.history]
            code, out, _ = await txc_participant(third.port, "holds")
            assert "no participant is held" in out
        finally:
            third.stop()


async def test_a_hold_that_refuses_starts_answers_unavailable_naming_it(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        await c.hold(participant.address, "migrating", refuse_starts=True)
        saga = Saga([Step("a", participant.address, "a.do", "a.undo", {})], gid="refused-1")
        with pytest.raises(Exception) as raised:
            await c.start_saga(saga)
        assert "UNAVAILABLE" in str(raised.value) and participant.address in str(raised.value)
        code, _, err = await txc_participant(server.port, "release", "nope", "--reason", "x")
        assert code == 1 and "address" in err
        await c.release(participant.address, "done")
        assert (await c.start_saga(saga, wait=True)).transaction.state == pb.TX_STATE_COMMITTED


async def test_pause_and_resume_a_saga_and_a_prepared_two_phase(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        saga = Saga([Step("a", participant.address, "a.do", "a.undo", {"sleep": 1.0}, retry=FAST),
                     Step("b", participant.address, "b.do", "b.undo", {}, retry=FAST)],
                    gid="paused-saga", timeout_s=1.5)
        tpc = TwoPhase([Step("a", participant.address, "a.do", payload={}, retry=FAST),
                        Step("b", participant.address, "b.do", payload={"prepare_sleep": 1.0},
                             retry=FAST),
                        # c votes only once healed: the 2PC is still PREPARING when paused
                        Step("c", participant.address, "c.do", payload={"flaky": 1000},
                             retry=FAST)], gid="paused-2pc", timeout_s=1.5)
        await c.start_saga(saga)
        await c.start_two_phase(tpc)
        await asyncio.sleep(0.2)  # a's execute and b's prepare are in flight
        for gid in ("paused-saga", "paused-2pc"):  # the client: quicker than a process
            assert (await c.pause(gid, "look first")).paused.reason == "look first"
        await asyncio.sleep(3.0)  # past both deadlines
        assert not [s for s in participant.calls if s.key.startswith("paused-saga/b/")]
        assert not [s for s in participant.calls if s.op == "commit"]
        tx = await c.get("paused-2pc")
        assert tx.state == pb.TX_STATE_PREPARING and tx.paused.reason == "look first"
        code, out, _ = await txc(server.port, "show", "paused-2pc")
        assert "PAUSED" in out and "2 branch(es) prepared: their participants hold locks" in out
        code, _, err = await txc(server.port, "pause", "paused-saga", "--reason", "again")
        assert code == 1 and "paused already" in err

        participant.healed = True
        code, out, err = await txc(server.port, "resume", "--all", "--gid-prefix", "paused-",
                                   "--reason", "all clear", "--dry-run")
        assert code == 0 and "2 transaction(s) would be resumed" in out
        code, out, err = await txc(server.port, "resume", "--all", "--gid-prefix", "paused-",
                                   "--reason", "all clear")
        assert code == 0, err
        for gid in ("paused-saga", "paused-2pc"):
            tx = await c.wait_settled(gid, 10)
            assert tx.state == pb.TX_STATE_COMMITTED
            actions = [h.action for h in tx.history if h.action in ("pause", "resume")]
            assert actions == ["pause", "resume"]
            assert tx.deadline_moved.ToTimedelta().total_seconds() >= 2.0


def _listed(out: str) -> set[str]:
    """The gids of a dry run's table (first column, after the header)."""
    lines = out.splitlines()
    return {line.split()[0] for line in lines[1:] if line and not line[0].isdigit()}


async def test_bulk_replay_by_label_and_by_participant_does_what_the_dry_run_listed(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    other = await ScriptedParticipant().start()
    try:
        async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
            def broken(p: ScriptedParticipant, gid: str, team: str) -> Saga:
                return Saga([Step("a", p.address, "a.do", "a.undo", {"undo_refuse": True},
                                  retry=FAST),
                             Step("b", p.address, "b.do", "b.undo", {"refuse": True}, retry=FAST)],
                            gid=gid, labels={"team": team})

            for gid, p, team in (("x1", participant, "pay"), ("x2", participant, "ship"),
                                 ("x3", other, "pay"), ("x4", other, "ship")):
                assert (await c.start_saga(broken(p, gid, team), wait=True)).transaction.state \
                    == pb.TX_STATE_FAILED
            participant.healed = other.healed = True

            code, out, _ = await txc(server.port, "replay", "--all", "--label", "team=pay",
                                     "--reason", "fixed", "--dry-run")
            assert code == 0 and _listed(out) == {"x1", "x3"}
            code, out, _ = await txc(server.port, "replay", "--all", "--label", "team=pay",
                                     "--reason", "fixed", "--confirm-above", "1")
            assert code == 2  # over the threshold, no terminal, no --yes: nothing done
            assert (await c.get("x1")).state == pb.TX_STATE_FAILED
            code, out, err = await txc(server.port, "replay", "--all", "--label", "team=pay",
                                       "--reason", "fixed", "--confirm-above", "1", "--yes")
            assert code == 0, err
            assert {line.split()[1] for line in out.splitlines()
                    if line.startswith("replayed ") and " of " not in line} == {"x1", "x3"}

            code, out, _ = await txc(server.port, "replay", "--all", "--participant",
                                     other.address, "--reason", "fixed", "--dry-run")
            assert code == 0 and _listed(out) == {"x4"}  # x3 is no longer FAILED
            code, out, err = await txc(server.port, "replay", "--all", "--participant",
                                       other.address, "--reason", "fixed", "--rate", "5")
            assert code == 0 and "replayed x4" in out and "replayed 1 of 1" in out
            for gid in ("x1", "x3", "x4"):
                assert (await c.wait_settled(gid, 10)).state == pb.TX_STATE_COMPENSATED
            assert (await c.get("x2")).state == pb.TX_STATE_FAILED
    finally:
        await other.stop()


async def test_holds_and_pauses_need_the_operator_right(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    operators = Operators.parse(f"ann {ACT_TOKEN} read,act\nrita {READ_TOKEN} read")
    options = replace(server_options(etcd, prefix), operators=operators)
    async with running(options) as server:
        address = f"127.0.0.1:{server.port}"
        async with CoordinatorClient(address) as anyone, \
                CoordinatorClient(address, token=READ_TOKEN) as reader, \
                CoordinatorClient(address, token=ACT_TOKEN) as ann:
            for client, code in ((anyone, grpc.StatusCode.UNAUTHENTICATED),
                                 (reader, grpc.StatusCode.PERMISSION_DENIED)):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await client.hold(participant.address, "maintenance")
                assert refused.value.code() == code
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await client.pause("any-gid", "look")
                assert refused.value.code() == code
            assert list(await reader.holds()) == []
            hold = await ann.hold(participant.address, "maintenance")
            assert hold.actor.startswith("operator:ann")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await reader.release(participant.address, "no")
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ann.hold("not an address", "maintenance")
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "address" in (refused.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ann.hold(participant.address, "x" * 2000)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "reason" in (refused.value.details() or "")
            assert (await ann.release(participant.address, "done")).address == participant.address
