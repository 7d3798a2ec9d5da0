"""Prepare / commit / abort on a real database through the host (no coordinator): the
local transaction is really prepared, survives as the server's prepared XID, holds its
row locks until phase 2, and every duplicate or reordered call gets a consistent answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator import ppb
from coordinator.participant import Decision, HostOptions, Op, ParticipantHost, TwoPhaseOptions
from coordinator.participant._db.session import guard_session
from coordinator.participant._db.tables import xa as xa_table
from coordinator.participant.two_phase import xid_for
from coordinator.participant.two_phase._table import XaState
from coordinator.participant.two_phase._xa import XaDriver, wait_session_gone, xa_driver

from ._service import RUNS, build
from ._service import rows as p2_rows
from .conftest import Db, call

pytestmark = pytest.mark.integration

OK, FAILED, RETRY = ppb.OUTCOME_OK, ppb.OUTCOME_FAILED, ppb.OUTCOME_RETRY


async def test_prepare_holds_locks_until_commit(db: Db, host: ParticipantHost, gid: str) -> None:
    row = await db.add_row(v=0)
    prepared = await call(host, Op.PREPARE, gid, "a", {"id": row}, "rows.bump")
    assert (prepared.outcome, prepared.result) == (OK, b"bumped")
    assert xid_for(gid, "a") in await db.prepared()
    doubt = [b for b in await host.in_doubt() if b.gid == gid]
    assert [(b.branch, b.operation, b.state) for b in doubt] == [("a", "rows.bump", "prepared")]
    assert doubt[0].age_s >= 0
    assert await db.value(row) == 0  # not visible before commit
    assert not await db.can_update(row)  # the prepared transaction holds the row lock

    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK
    assert await db.value(row) == 1
    assert await db.can_update(row)
    assert xid_for(gid, "a") not in await db.prepared()
    assert not [b for b in await host.in_doubt() if b.gid == gid]
    again = await call(host, Op.COMMIT, gid, "a", {})  # commit twice
    assert (again.outcome, again.message) == (OK, "already committed")
    assert (await call(host, Op.ABORT, gid, "a", {})).outcome == FAILED  # conflicting
    assert await db.value(row) == 1


async def test_prepare_blocked_by_a_prepared_branch_answers_retry_not_waits(
        db: Db, gid: str) -> None:
    """A prepared branch holds its row locks until phase 2: a second prepare on the same
    row waits lock_timeout at most, answers RETRY without recording a vote, and votes
    once the first branch is finished."""
    host = build(db.engine, HostOptions(two_phase=TwoPhaseOptions(lock_timeout_s=0.5)))
    row = await db.add_row(v=0)
    assert (await call(host, Op.PREPARE, gid, "a", {"id": row}, "rows.bump")).outcome == OK
    started = time.monotonic()
    blocked = await call(host, Op.PREPARE, gid, "b", {"id": row}, "rows.bump")
    assert blocked.outcome == RETRY and "locked by another transaction" in blocked.message
    assert time.monotonic() - started < 3.0
    assert await db.xa_state(gid, "b") is None  # nothing recorded: the retry starts afresh
    assert xid_for(gid, "b") not in await db.prepared()
    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK
    assert (await call(host, Op.PREPARE, gid, "b", {"id": row}, "rows.bump")).outcome == OK
    assert (await call(host, Op.COMMIT, gid, "b", {})).outcome == OK
    assert await db.value(row) == 2
    assert await db.can_update(row)  # the session setting did not leak into the pool


async def test_prepares_past_the_cap_answer_busy_and_phase_two_still_runs(
        db: Db, gid: str) -> None:
    host = build(db.engine, HostOptions(two_phase=TwoPhaseOptions(
        lock_timeout_s=1.0, max_concurrent_prepares=2)))
    row = await db.add_row(v=0)
    assert (await call(host, Op.PREPARE, gid, "holder", {"id": row}, "rows.bump")).outcome == OK
    # Three prepares wait for the holder's lock; only two may run, the third is turned away.
    waiting = await asyncio.gather(*(call(host, Op.PREPARE, gid, f"w{i}", {"id": row}, "rows.bump")
                                     for i in range(3)))
    messages = sorted(w.message.split(":")[0] for w in waiting)
    assert {w.outcome for w in waiting} == {RETRY}
    assert messages.count("busy") == 1
    assert (await call(host, Op.ABORT, gid, "holder", {})).outcome == OK
    assert await db.value(row) == 0


async def test_prepare_then_abort_rolls_back(db: Db, host: ParticipantHost, gid: str) -> None:
    row = await db.add_row(v=0)
    assert (await call(host, Op.PREPARE, gid, "a", {"id": row}, "rows.bump")).outcome == OK
    assert not await db.can_update(row)
    assert (await call(host, Op.ABORT, gid, "a", {})).outcome == OK
    assert await db.value(row) == 0
    assert await db.can_update(row)
    assert xid_for(gid, "a") not in await db.prepared()
    assert (await call(host, Op.ABORT, gid, "a", {})).message == "already aborted"
    late = await call(host, Op.COMMIT, gid, "a", {})
    assert late.outcome == FAILED and "aborted" in late.message
    assert await db.xa_state(gid, "a") == "aborted"


async def test_abort_before_prepare_makes_the_late_prepare_vote_no(
        db: Db, host: ParticipantHost, gid: str) -> None:
    null = await call(host, Op.ABORT, gid, "a", {})
    assert null.outcome == OK and null.message.startswith("null abort")
    for _ in range(2):
        late = await call(host, Op.PREPARE, gid, "a", {"id": gid})
        assert late.outcome == FAILED and "hanging" in late.message
    assert RUNS[f"{gid}/a"] == 0  # the handler never ran
    assert await db.value(gid) is None
    assert xid_for(gid, "a") not in await db.prepared()


async def test_duplicate_and_concurrent_prepares_run_once(
        db: Db, host: ParticipantHost, gid: str) -> None:
    first = await call(host, Op.PREPARE, gid, "a", {"id": f"{gid}-a"})
    second = await call(host, Op.PREPARE, gid, "a", {"id": f"{gid}-a"})
    assert first == second and first.outcome == OK and first.result == f"put {gid}-a".encode()
    twins = await asyncio.gather(*(call(host, Op.PREPARE, gid, "b", {"id": f"{gid}-b"})
                                   for _ in range(4)))
    # Twins never queue behind each other (that could hold every pooled connection):
    # the one that runs votes, the others are told to retry and then get the same vote.
    assert OK in {t.outcome for t in twins} and {t.outcome for t in twins} <= {OK, RETRY}
    assert all("in progress" in t.message for t in twins if t.outcome == RETRY)
    again = await call(host, Op.PREPARE, gid, "b", {"id": f"{gid}-b"})
    assert again.outcome == OK and again.result == f"put {gid}-b".encode()
    assert (RUNS[f"{gid}/a"], RUNS[f"{gid}/b"]) == (1, 1)
    commits = [await call(host, Op.COMMIT, gid, b, {}) for b in "abab"]
    assert {c.outcome for c in commits} == {OK}
    assert (await db.value(f"{gid}-a"), await db.value(f"{gid}-b")) == (1, 1)


async def test_refusal_votes_no_rolls_back_and_is_remembered(
        db: Db, host: ParticipantHost, gid: str) -> None:
    for _ in range(2):
        no = await call(host, Op.PREPARE, gid, "a", {"id": gid, "refuse": True})
        assert (no.outcome, no.message) == (FAILED, "refused by test")
    assert RUNS[f"{gid}/a"] == 1
    assert xid_for(gid, "a") not in await db.prepared()
    assert await db.xa_state(gid, "a") == "refused"
    abort = await call(host, Op.ABORT, gid, "a", {})
    assert abort.outcome == OK and "voted no" in abort.message
    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == FAILED


async def test_commit_after_an_unrecorded_commit_is_ok(db: Db, host: ParticipantHost, gid: str) -> None:
    """The XID was committed by someone else (a twin, the recovery loop, a process that
    died before answering): the second commit finds no XID (MariaDB 1397, PostgreSQL
    42704) and the witness row written inside the prepared transaction says it committed."""
    assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK
    await host._two_phase.close()  # MariaDB: another session may finish it once the kept one is gone
    statement = "XA COMMIT '{}'" if db.kind == "mariadb" else "COMMIT PREPARED '{}'"
    async with db.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql(statement.format(xid_for(gid, "a")))
    assert await db.xa_state(gid, "a") == "prepared"
    commit = await call(host, Op.COMMIT, gid, "a", {})
    assert (commit.outcome, commit.message) == (OK, "already committed")
    assert await db.outcome(gid, "a") == "committed"
    assert (await call(host, Op.ABORT, gid, "a", {})).outcome == FAILED
    assert await db.value(gid) == 1


async def test_a_late_duplicate_prepare_after_phase_two_gets_the_stored_vote(
        db: Db, host: ParticipantHost, gid: str) -> None:
    """Phase 2 keeps the vote's result: a delayed duplicate Prepare answers it byte for
    byte, after a commit as before it (it was written back as NULL once)."""
    first = await call(host, Op.PREPARE, gid, "a", {"id": gid})
    assert (first.outcome, first.result) == (OK, f"put {gid}".encode())
    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK
    late = await call(host, Op.PREPARE, gid, "a", {"id": gid})
    assert late == first
    assert RUNS[f"{gid}/a"] == 1
    assert await db.value(gid) == 1


async def test_branch_prepared_but_vote_unrecorded(db: Db, host: ParticipantHost, gid: str) -> None:
    """Died after XA PREPARE, before recording the vote: the retried prepare finds the XID
    prepared and votes yes without running the handler again."""
    assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK
    async with db.engine.begin() as conn:
        await conn.execute(update(xa_table).where(xa_table.c.xid == xid_for(gid, "a"))
                           .values(state="preparing"))
    again = await call(host, Op.PREPARE, gid, "a", {"id": gid})
    assert (again.outcome, again.message) == (OK, "already prepared")
    assert RUNS[f"{gid}/a"] == 1
    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK
    assert await db.value(gid) == 1


async def test_read_only_branches(db: Db, host: ParticipantHost, gid: str) -> None:
    """A handler that writes nothing still prepares, commits and aborts without surprises
    (the SDK's own barrier row keeps the XA branch from being read-only)."""
    for branch, end in (("a", Op.COMMIT), ("b", Op.ABORT)):
        vote = await call(host, Op.PREPARE, gid, branch, {"id": gid, "readonly": True})
        assert (vote.outcome, vote.result) == (OK, b"read only")
        assert (await call(host, end, gid, branch, {})).outcome == OK
        assert (await call(host, end, gid, branch, {})).outcome == OK
    assert xid_for(gid, "a") not in await db.prepared()


async def test_commit_of_a_branch_never_prepared_is_refused(host: ParticipantHost, gid: str) -> None:
    reply = await call(host, Op.COMMIT, gid, "a", {})
    assert reply.outcome == FAILED and "never prepared" in reply.message
    unknown = await call(host, Op.PREPARE, gid, "a", {}, operation="rows.nope")
    assert unknown.outcome == FAILED and "rows.bump, rows.put" in unknown.message
    assert (await call(host, Op.COMMIT, gid, "a", {}, operation="rows.nope")).outcome == FAILED


async def test_no_local_transaction_is_left_open(db: Db, host: ParticipantHost, gid: str) -> None:
    await call(host, Op.PREPARE, gid, "a", {"id": gid})
    await call(host, Op.ABORT, gid, "a", {})
    if db.kind == "postgresql":
        sql = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
               "AND state LIKE 'idle in transaction%'")
    else:
        sql = ("SELECT count(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
               "ON p.id = t.trx_mysql_thread_id WHERE p.db = DATABASE()")
    # InnoDB refreshes information_schema.innodb_trx at most every 100 ms: ask until then.
    deadline = time.monotonic() + 1.0
    async with db.engine.connect() as conn:
        while (open_ := (await conn.execute(text(sql))).scalar_one()) and time.monotonic() < deadline:
            await conn.rollback()
            await asyncio.sleep(0.05)
    assert open_ == 0


async def test_a_silent_session_is_ended_by_the_server_and_its_locks_go(db: Db) -> None:
    """What a connection lost mid-call leaves behind (a session holding row locks) does
    not outlive session_timeout: the server ends it."""
    row = await db.add_row(v=0)
    silent = await db.engine.connect()
    try:
        await guard_session(silent, 1.0)
        await silent.begin()
        await silent.execute(update(p2_rows).where(p2_rows.c.id == row).values(v=5))
        assert await _locked(db, row)  # the lock is held ...
        deadline = time.monotonic() + 8
        while await _locked(db, row):  # ... until the server ends the silent session
            assert time.monotonic() < deadline, "the silent session kept its lock"
            await asyncio.sleep(0.5)
        with pytest.raises(sa_exc.DBAPIError):
            await silent.execute(select(p2_rows.c.v).where(p2_rows.c.id == row))
    finally:
        with contextlib.suppress(Exception):
            await silent.invalidate()
        with contextlib.suppress(Exception):
            await silent.close()
    assert await db.value(row) == 0  # its write was rolled back with it


async def _locked(db: Db, row_id: str) -> bool:
    async with db.engine.connect() as conn, conn.begin():
        try:
            await conn.execute(select(p2_rows.c.v).where(p2_rows.c.id == row_id)
                               .with_for_update(nowait=True))
            return False
        except sa_exc.DBAPIError:  # 55P03 lock_not_available / MariaDB 1205 or 3572
            return True


async def test_after_detach_any_session_finishes_the_prepared_branch_at_once(db: Db) -> None:
    """MySQL/MariaDB: the vote is sent only once the preparing session is gone, so a commit
    from another session, even at once, finds the XID. (A commit racing with the end of
    that session can be lost by MariaDB: OK answered, the branch left prepared, unlisted.)
    Without the wait, a few of these commits meet the session still attached."""
    if db.kind != "mariadb":
        pytest.skip("PostgreSQL's PREPARE TRANSACTION dissociates at once")
    refused = []
    async with db.engine.connect() as observer:
        await observer.execution_options(isolation_level="AUTOCOMMIT")
        driver = xa_driver(observer)
        for i in range(300):
            xid = xid_for(f"detach-{uuid.uuid4().hex[:8]}", "b")
            conn = await db.engine.connect()
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await driver.begin(conn, xid, lock_timeout_s=1, session_timeout_s=30)
            await conn.execute(p2_rows.insert().values(id=f"d-{i}-{uuid.uuid4().hex[:6]}", v=0))
            await driver.prepare(conn, xid)
            session = await driver.preparing_session(conn)
            assert session is not None
            await conn.invalidate()
            await wait_session_gone(observer, session)
            await conn.close()
            try:
                await driver.commit_prepared(observer, xid)
            except sa_exc.DBAPIError as exc:
                refused.append(str(exc.orig))
                await _finish_later(driver, observer, xid)
    assert refused == []


async def _finish_later(driver: XaDriver, conn: AsyncConnection, xid: str) -> None:
    for _ in range(100):
        with contextlib.suppress(sa_exc.DBAPIError):
            await driver.commit_prepared(conn, xid)
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("decision", [Decision.COMMIT, Decision.ABORT])
async def test_phase_two_twins_and_recovery_finish_a_branch_once(
        db: Db, gid: str, decision: Decision, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing locks a branch in phase 2: twin Commits or Aborts (the coordinator's retry
    while the first runs) and the recovery loop finish the same XIDs at once. Whoever comes
    second finds the XID gone (and its witness tells how it ended), or finds another
    session finishing it right now and answers RETRY: never FAILED, never an error."""
    op, value, state = ((Op.COMMIT, 1, XaState.COMMITTED) if decision is Decision.COMMIT
                        else (Op.ABORT, None, XaState.ABORTED))
    host = build(db.engine, HostOptions(two_phase=TwoPhaseOptions(max_concurrent_prepares=20)))
    gids = [f"{gid}-{i}" for i in range(20)]
    assert {(await call(host, Op.PREPARE, g, "a", {"id": g})).outcome for g in gids} == {OK}
    await host._two_phase.close()  # MariaDB: the sessions end, so any session may finish them
    caplog.set_level(logging.WARNING)
    doubt = {b.gid: b for b in await host.in_doubt() if b.gid in gids}
    twins = [call(host, op, g, "a", {}) for g in gids for _ in range(3)]
    resolved = [host._two_phase.resolve(doubt[g], decision) for g in gids]
    replies = await asyncio.gather(*twins, *resolved)
    answers = [r for r in replies if isinstance(r, ppb.BranchReply)]
    assert {r.outcome for r in answers} <= {OK, RETRY}
    assert not [r.message for r in answers if r.outcome == RETRY and "busy" not in r.message]
    assert {r for r in replies if not isinstance(r, ppb.BranchReply)} <= {state, None}
    assert not [rec.message for rec in caplog.records if rec.levelno >= logging.ERROR]
    for g in gids:
        again = await call(host, op, g, "a", {})
        assert (again.outcome, again.message) == (OK, f"already {state.value}")
        assert await db.value(g) == value
    assert not [b for b in await host.in_doubt() if b.gid in gids]
