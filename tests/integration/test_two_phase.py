"""2PC through the gRPC API against a real etcd; the coordinator side of the protocol."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from coordinator import CoordinatorClient, pb
from coordinator.server import DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import client_for, two_coordinator_processes
from .participant import ScriptedParticipant
from .test_crash import wait_for_call

pytestmark = pytest.mark.integration


def two_phase(p: ScriptedParticipant, gid: str, *specs: dict[str, object],
              timeout_s: float = 10.0, wait: bool = True) -> pb.StartTwoPhaseRequest:
    import json
    retry = pb.RetryPolicy(initial_backoff=Duration(nanos=20_000_000),
                           max_backoff=Duration(nanos=200_000_000))
    branches = [pb.Branch(name=n, participant=p.address, action=f"{n}.write",
                          payload=json.dumps(s).encode(), retry=retry)
                for n, s in zip("abcd", specs, strict=False)]
    timeout = Duration()
    timeout.FromNanoseconds(int(timeout_s * 1e9))
    return pb.StartTwoPhaseRequest(gid=gid, branches=branches, timeout=timeout, wait=wait)


async def start(c: CoordinatorClient, request: pb.StartTwoPhaseRequest) -> pb.StartResponse:
    return await c.start_two_phase(request, timeout_s=30)


async def test_all_yes_commits_everywhere(etcd: DevEtcd, prefix: str,
                                          participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        r = await start(c, two_phase(participant, "yes", {}, {}))
    assert r.transaction.protocol == pb.PROTOCOL_TWO_PHASE
    assert r.transaction.state == pb.TX_STATE_COMMITTED
    assert dict(participant.effects) == {f"yes/{b}/{op}": 1 for b in "ab"
                                         for op in ("prepare", "commit")}


async def test_one_no_aborts_all(etcd: DevEtcd, prefix: str,
                                 participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        r = await start(c, two_phase(participant, "no", {}, {"refuse": True}, {}))
    assert r.transaction.state == pb.TX_STATE_ABORTED
    assert [b.state for b in r.transaction.branches] == [
        pb.BRANCH_STATE_ABORTED, pb.BRANCH_STATE_VOTED_NO, pb.BRANCH_STATE_ABORTED]
    assert not [k for k in participant.effects if k.endswith("/commit")]
    assert {k for k in participant.effects if k.endswith("/abort")} == {"no/a/abort", "no/c/abort"}


async def test_prepare_timeout_aborts_and_rolls_back_the_prepared(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        r = await start(c, two_phase(participant, "slow", {}, {"prepare_sleep": 3.0}, timeout_s=0.5))
    assert r.transaction.state == pb.TX_STATE_ABORTED
    assert r.transaction.error == "prepare deadline exceeded"
    assert participant.effects["slow/a/abort"] == 1  # the prepared branch was rolled back


async def test_compensation_on_a_two_phase_branch_is_refused(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    request = two_phase(participant, "bad", {})
    request.branches[0].compensation = "undo"
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await start(c, request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("branches[0].compensation")


async def test_coordinator_killed_after_the_decision_another_commits_everything(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, tmp_path: Path) -> None:
    async with two_coordinator_processes(etcd, prefix, tmp_path) as (first, second):
        async with CoordinatorClient(f"127.0.0.1:{first.port}") as c1:
            await start(c1, two_phase(participant, "decided", {"commit_sleep": 1.0},
                                      {"commit_sleep": 1.0}, wait=False))
        await wait_for_call(participant, "decided/a/commit")
        first.kill()  # the commit decision is in etcd; phase 2 is unanswered
        async with CoordinatorClient(f"127.0.0.1:{second.port}") as c2:
            tx = await c2.wait_settled("decided")
    assert tx.state == pb.TX_STATE_COMMITTED
    assert participant.effects["decided/a/commit"] == 1
    assert participant.effects["decided/b/commit"] == 1
    assert not [k for k in participant.effects if k.endswith("/abort")]


async def test_coordinator_killed_while_preparing_presumes_abort_or_finishes(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, tmp_path: Path) -> None:
    async with two_coordinator_processes(etcd, prefix, tmp_path) as (first, second):
        async with CoordinatorClient(f"127.0.0.1:{first.port}") as c1:
            await start(c1, two_phase(participant, "undecided", {}, {"prepare_sleep": 1.0},
                                      timeout_s=1.5, wait=False))
        await wait_for_call(participant, "undecided/b/prepare")
        first.kill()
        async with CoordinatorClient(f"127.0.0.1:{second.port}") as c2:
            tx = await c2.wait_settled("undecided")
    # Atomic either way: all committed or all rolled back, never a mix.
    commits = [k for k in participant.effects if k.endswith("/commit")]
    aborts = [k for k in participant.effects if k.endswith("/abort")]
    assert tx.state in (pb.TX_STATE_COMMITTED, pb.TX_STATE_ABORTED)
    assert (len(commits), len(aborts)) in ((2, 0), (0, 2))
