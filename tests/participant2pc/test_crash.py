"""A participant process killed (SIGKILL) after preparing: its branch stays prepared in the
database, holding its row lock, until a restarted process's recovery loop asks the
coordinator and finishes it (NOT_FOUND -> abort; decided commit -> commit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from coordinator import CoordinatorClient, pb, ppb, ppb_grpc
from coordinator.participant.two_phase import xid_for
from tests.support.processes import Child

from .conftest import Db, branch, start_two_phase

pytestmark = pytest.mark.integration

CHILD = "tests.participant2pc._host_child"


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 20.0) -> None:
    end = time.monotonic() + within
    while not await check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_killed_after_prepare_unknown_gid_is_aborted_on_restart(
        db: Db, coordinator: str, gid: str, tmp_path: Path) -> None:
    row = await db.add_row(v=0)
    xid = xid_for(gid, "a")
    first = Child(tmp_path / "prepare.log", CHILD, "prepare", db.dsn, gid, "a", row)
    try:
        assert await first.line() == "voted OUTCOME_OK"
    finally:
        first.kill()
    assert xid in await db.prepared()  # outlived its process
    assert not await db.can_update(row)  # and still holds the row lock

    restarted = Child(tmp_path / "serve.log", CHILD, "serve", db.dsn, coordinator)
    try:
        assert (await restarted.line()).startswith("serving")
        await until(lambda: _logged(restarted, f"gid={gid} branch=a aborted"), "recovery to abort")
    finally:
        restarted.kill()
    assert xid not in await db.prepared()
    assert await db.value(row) == 0
    assert await db.can_update(row)
    assert await db.xa_state(gid, "a") == "aborted"
    assert "NOT_FOUND: presumed abort" in restarted.logs()


async def test_killed_after_voting_yes_commits_on_restart(
        db: Db, coordinator: str, gid: str, tmp_path: Path) -> None:
    row = await db.add_row(v=0)
    xid = xid_for(gid, "a")
    gate = await Gate().start()
    first = Child(tmp_path / "first.log", CHILD, "serve", db.dsn, coordinator)
    try:
        port = int((await first.line()).split()[1])
        # a: the process under test; b: holds its vote until the process is dead.
        plan = [branch("a", f"127.0.0.1:{port}", {"id": row}, "rows.bump", max_attempts=3),
                branch("b", gate.address, {})]
        await start_two_phase(coordinator, gid, plan, wait=False, deadline=60)
        await until(lambda: _branch_state(coordinator, gid, pb.BRANCH_STATE_PREPARED), "a's yes vote")
    finally:
        first.kill()
    gate.vote.set()  # b votes yes: the coordinator decides commit, but cannot reach a
    await until(lambda: _decided_commit(coordinator, gid), "the commit decision")
    assert xid in await db.prepared()
    assert not await db.can_update(row)

    restarted = Child(tmp_path / "restarted.log", CHILD, "serve", db.dsn, coordinator)  # on another port
    try:
        assert (await restarted.line()).startswith("serving")
        await until(lambda: _logged(restarted, f"gid={gid} branch=a committed"), "recovery to commit")
    finally:
        restarted.kill()
        await gate.stop()
    assert xid not in await db.prepared()
    assert await db.value(row) == 1
    assert await db.can_update(row)
    assert await db.outcome(gid, "a") == "committed"
    assert await db.xa_state(gid, "a") == "prepared"  # a committed branch keeps its vote


async def _logged(proc: Child, line: str) -> bool:
    return line in proc.logs()


async def _transaction(coordinator: str, gid: str) -> pb.Transaction:
    async with CoordinatorClient(coordinator) as client:
        return await client.get(gid)


async def _branch_state(coordinator: str, gid: str, state: int) -> bool:
    return (await _transaction(coordinator, gid)).branches[0].state == state


async def _decided_commit(coordinator: str, gid: str) -> bool:
    tx = await _transaction(coordinator, gid)
    return tx.state in (pb.TX_STATE_COMMITTING, pb.TX_STATE_FAILED)


class Gate(ppb_grpc.ParticipantServicer):
    """A participant whose Prepare answers yes only once ``vote`` is set."""

    def __init__(self) -> None:
        self.vote = asyncio.Event()
        self.server = grpc.aio.server()
        self.address = ""

    async def start(self) -> Gate:
        ppb_grpc.add_ParticipantServicer_to_server(self, self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop(0)

    async def Prepare(self, request: ppb.BranchRequest, context: object) -> ppb.BranchReply:
        await self.vote.wait()
        return ppb.BranchReply(outcome=ppb.OUTCOME_OK)

    async def Commit(self, request: ppb.BranchRequest, context: object) -> ppb.BranchReply:
        return ppb.BranchReply(outcome=ppb.OUTCOME_OK)

    async def Abort(self, request: ppb.BranchRequest, context: object) -> ppb.BranchReply:
        return ppb.BranchReply(outcome=ppb.OUTCOME_OK)
