"""A participant process killed (SIGKILL) at each point of a 2PC branch where the database
holds something different, on both databases: what the database holds then, what the
recovery loop finds (``in_doubt``), and what the calls that follow answer — from another
process, as after a restart (docs/two_phase.md, "Crash points"). Nothing may be lost or
applied twice: a repeated Prepare answers the vote that was sent (or no, when none was),
a repeated Commit or Abort is a no-op with the same answer.

The child stops at the point by a hook between two of the SDK's real statements
(``_host_child.CRASH_POINTS``) and is killed there.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from coordinator import ppb
from coordinator.participant import Op, ParticipantHost
from coordinator.participant.two_phase import xid_for
from coordinator.participant.two_phase._branches import UNFINISHED
from tests.support.processes import Child

from ._service import RUNS
from .conftest import Db, call
from .test_crash import until

pytestmark = pytest.mark.integration

CHILD = "tests.participant2pc._host_child"
OK, FAILED, RETRY = ppb.OUTCOME_OK, ppb.OUTCOME_FAILED, ppb.OUTCOME_RETRY
HANGING = "prepare refused: its abort already ran; hanging request"
BUSY = "busy: another call for this branch is in progress"


async def killed_at(db: Db, point: str, gid: str, tmp_path: Path) -> str:
    """A rows.bump branch of ``gid`` run by another process up to ``point``, which is then
    killed; the row it bumps. Returns once the dead process's locks are gone."""
    row = await db.add_row(v=0)
    child = Child(tmp_path / f"{point}.log", CHILD, "crash", db.dsn, point, gid, "a", row)
    try:
        assert await child.line() == f"at {point}"
    finally:
        child.kill()
    await until(lambda: db.can_update(row), "the dead process's session to end")
    return row


async def settled(host: ParticipantHost, op: Op, gid: str, body: dict[str, object]) -> ppb.BranchReply:
    """The call's answer once it is not RETRY (the dead session may take a moment to end)."""
    end = time.monotonic() + 20
    while (reply := await call(host, op, gid, "a", body, "rows.bump")).outcome == RETRY:
        assert time.monotonic() < end, reply.message
    return reply


async def in_doubt(host: ParticipantHost, gid: str) -> list[str]:
    return [b.state for b in await host.in_doubt() if b.gid == gid]


async def test_killed_before_its_row_nothing_is_left_and_the_retry_votes_yes(
        db: Db, host: ParticipantHost, gid: str, tmp_path: Path) -> None:
    row = await killed_at(db, "before-row", gid, tmp_path)
    assert (await db.xa_state(gid, "a"), await db.outcome(gid, "a")) == (None, None)
    assert xid_for(gid, "a") not in await db.prepared()
    assert await in_doubt(host, gid) == []
    vote = await settled(host, Op.PREPARE, gid, {"id": row})
    assert (vote.outcome, vote.result) == (OK, b"bumped")
    assert RUNS[f"{gid}/a"] == 1  # run here once; the dead run's writes were rolled back
    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK
    assert await db.value(row) == 1


async def test_killed_between_its_row_and_prepare_the_retry_votes_no(
        db: Db, host: ParticipantHost, gid: str, tmp_path: Path) -> None:
    """The row says prepared, but PREPARE never ran: no yes vote was sent. The retry votes
    no (under the branch lock), every later call agrees, nothing is applied."""
    row = await killed_at(db, "before-prepare", gid, tmp_path)
    assert await db.xa_state(gid, "a") == "prepared"
    assert xid_for(gid, "a") not in await db.prepared()
    assert await in_doubt(host, gid) == []
    for _ in range(2):
        vote = await settled(host, Op.PREPARE, gid, {"id": row})
        assert (vote.outcome, vote.message) == (FAILED, UNFINISHED)
    assert RUNS[f"{gid}/a"] == 0
    assert await db.xa_state(gid, "a") == "refused"
    abort = await call(host, Op.ABORT, gid, "a", {})
    assert (abort.outcome, abort.message) == (OK, "nothing to roll back: this branch voted no")
    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == FAILED
    assert await db.value(row) == 0


async def test_killed_after_prepare_the_retry_answers_the_same_vote(
        db: Db, host: ParticipantHost, gid: str, tmp_path: Path) -> None:
    """Prepared, the vote sent or not: the retry answers it again, result included, without
    running the handler; the branch waits in doubt, holding its lock, for phase 2.
    (test_crash.py has the recovery loop finish such branches with a real coordinator.)"""
    row = await db.add_row(v=0)
    first = Child(tmp_path / "prepare.log", CHILD, "prepare", db.dsn, gid, "a", row)
    try:
        assert await first.line() == "voted OUTCOME_OK"
    finally:
        first.kill()
    assert xid_for(gid, "a") in await db.prepared()
    assert await in_doubt(host, gid) == ["prepared"]
    again = await call(host, Op.PREPARE, gid, "a", {"id": row}, "rows.bump")
    assert (again.outcome, again.result) == (OK, b"bumped")
    assert RUNS[f"{gid}/a"] == 0
    assert not await db.can_update(row)
    assert (await settled(host, Op.COMMIT, gid, {})).outcome == OK
    assert await db.value(row) == 1
    late = await call(host, Op.PREPARE, gid, "a", {"id": row}, "rows.bump")
    assert (late.outcome, late.result) == (OK, b"bumped")


async def test_killed_after_commit_the_retry_is_a_no_op(
        db: Db, host: ParticipantHost, gid: str, tmp_path: Path) -> None:
    row = await killed_at(db, "after-commit", gid, tmp_path)
    assert await db.value(row) == 1
    assert xid_for(gid, "a") not in await db.prepared()
    assert (await db.xa_state(gid, "a"), await db.outcome(gid, "a")) == ("prepared", "committed")
    assert await in_doubt(host, gid) == []
    for _ in range(2):
        again = await call(host, Op.COMMIT, gid, "a", {})
        assert (again.outcome, again.message) == (OK, "already committed")
    late = await call(host, Op.PREPARE, gid, "a", {"id": row}, "rows.bump")
    assert (late.outcome, late.result) == (OK, b"bumped")  # the stored vote
    assert (await call(host, Op.ABORT, gid, "a", {})).outcome == FAILED  # conflicting
    assert await db.value(row) == 1


async def test_killed_after_rollback_the_retry_marks_it_aborted(
        db: Db, host: ParticipantHost, gid: str, tmp_path: Path) -> None:
    """Rolled back, the row not yet marked: the XID is gone and its witness never became
    visible. The retried abort marks the row (under the branch lock); a late prepare
    votes no."""
    row = await killed_at(db, "after-rollback", gid, tmp_path)
    assert xid_for(gid, "a") not in await db.prepared()
    assert (await db.xa_state(gid, "a"), await db.outcome(gid, "a")) == ("prepared", "prepared")
    assert await in_doubt(host, gid) == []
    abort = await settled(host, Op.ABORT, gid, {})
    assert (abort.outcome, abort.message) == (OK, "")
    again = await call(host, Op.ABORT, gid, "a", {})
    assert (again.outcome, again.message) == (OK, "already aborted")
    assert await db.xa_state(gid, "a") == "aborted"
    late = await call(host, Op.PREPARE, gid, "a", {"id": row}, "rows.bump")
    assert (late.outcome, late.message) == (FAILED, HANGING)
    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == FAILED
    assert await db.value(row) == 0


async def test_killed_after_rollback_a_late_prepare_votes_no(
        db: Db, host: ParticipantHost, gid: str, tmp_path: Path) -> None:
    """The same crash, met first by a delayed duplicate Prepare: it votes no rather than
    prepare the branch again after its abort; the retried abort then has nothing to do."""
    row = await killed_at(db, "after-rollback", gid, tmp_path)
    late = await settled(host, Op.PREPARE, gid, {"id": row})
    assert (late.outcome, late.message) == (FAILED, UNFINISHED)
    assert RUNS[f"{gid}/a"] == 0
    abort = await call(host, Op.ABORT, gid, "a", {})
    assert (abort.outcome, abort.message) == (OK, "nothing to roll back: this branch voted no")
    assert xid_for(gid, "a") not in await db.prepared()
    assert await db.value(row) == 0


# -- calls that meet a prepare in progress (the child stopped at a point, then let go) ----


async def test_an_abort_between_a_prepares_read_and_its_row_makes_it_vote_no(
        db: Db, host: ParticipantHost, gid: str, tmp_path: Path) -> None:
    """The abort comes first for the row (a null abort), though the prepare already ran its
    business function: the prepare's row conflicts, it rolls back and votes no."""
    row = await db.add_row(v=0)
    child = Child(tmp_path / "race.log", CHILD, "crash", db.dsn, "before-row", gid, "a", row)
    try:
        assert await child.line() == "at before-row"
        null = await call(host, Op.ABORT, gid, "a", {})
        assert (null.outcome, null.message[:10]) == (OK, "null abort")
        child.proc.send_signal(signal.SIGUSR1)
        assert await child.line() == f"replied OUTCOME_FAILED {HANGING}"
    finally:
        child.kill()
    assert await db.xa_state(gid, "a") == "aborted"
    assert xid_for(gid, "a") not in await db.prepared()
    assert await db.value(row) == 0
    assert await db.can_update(row)


async def test_calls_that_meet_a_prepare_between_its_row_and_prepare_are_told_busy(
        db: Db, host: ParticipantHost, gid: str, tmp_path: Path) -> None:
    """While a prepare holds the branch lock between its row and its PREPARE, an abort and a
    duplicate prepare cannot tell it from one that died there: they answer RETRY instead
    of voting no or marking the row; the prepare then votes yes, and the abort that
    follows rolls it back."""
    row = await db.add_row(v=0)
    child = Child(tmp_path / "race.log", CHILD, "crash", db.dsn, "before-prepare", gid, "a", row)
    try:
        assert await child.line() == "at before-prepare"
        for op in (Op.ABORT, Op.PREPARE):
            busy = await call(host, op, gid, "a", {"id": row}, "rows.bump")
            assert (busy.outcome, busy.message) == (RETRY, BUSY)
        child.proc.send_signal(signal.SIGUSR1)
        assert await child.line() == "replied OUTCOME_OK"
        assert await db.xa_state(gid, "a") == "prepared"
    finally:
        child.kill()  # MariaDB: its kept session ends with it, so this process may finish the XID
    assert (await settled(host, Op.ABORT, gid, {})).outcome == OK
    assert await db.xa_state(gid, "a") == "aborted"
    assert xid_for(gid, "a") not in await db.prepared()
    assert await db.value(row) == 0
