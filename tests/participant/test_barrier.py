"""The barrier on real PostgreSQL and MariaDB: every rule, including races."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.participant import (
    Barrier,
    BarrierOptions,
    BranchKey,
    BusinessFn,
    Op,
    Outcome,
    Refused,
    Reply,
)
from coordinator.participant._db.tables import barrier as barrier_table

from .conftest import Db, accounts, effects, new_account

pytestmark = pytest.mark.integration


def effect(gid: str, op: str, account: str, amount: int, *, result: bytes = b"",
           delay: float = 0.0) -> BusinessFn:
    """A business step: move ``amount`` on ``account`` and record that the effect committed."""

    async def run(conn: AsyncConnection) -> bytes:
        await conn.execute(
            update(accounts).where(accounts.c.id == account)
            .values(balance=accounts.c.balance + amount)
        )
        await conn.execute(effects.insert().values(gid=gid, op=op, amount=amount))
        if delay:
            await asyncio.sleep(delay)
        return result

    return run


def refusing(gid: str, op: str, account: str) -> BusinessFn:
    async def run(conn: AsyncConnection) -> bytes:
        await effect(gid, op, account, -1)(conn)  # a write that must roll back
        raise Refused("insufficient funds")

    return run


async def never(conn: AsyncConnection) -> bytes:
    raise AssertionError("the business function must not run")


async def balance(db: Db, account: str) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(
            select(accounts.c.balance).where(accounts.c.id == account))).scalar_one())


async def account(db: Db, amount: int = 100) -> str:
    async with db.engine.begin() as conn:
        return await new_account(conn, amount)


async def barrier_row(db: Db, gid: str, op: Op) -> tuple[str, int | None] | None:
    t = barrier_table
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(t.c.reason, t.c.outcome).where(
            t.c.gid == gid, t.c.branch == "b1", t.c.op == op.value))).first()
    return None if row is None else (row.reason, row.outcome)


async def test_duplicate_execute_gets_the_same_reply_and_no_second_effect(db: Db, gid: str) -> None:
    acct, bar = await account(db), Barrier(db.engine)
    key = BranchKey(gid, "b1", Op.EXECUTE)
    first = await bar.call(key, effect(gid, "execute", acct, -10, result=b"receipt-1"))
    again = await bar.call(key, effect(gid, "execute", acct, -10, result=b"receipt-2"))
    assert first == Reply(Outcome.OK, b"receipt-1")
    assert again == first
    assert await db.count_effects(gid) == 1
    assert await balance(db, acct) == 90


async def test_refused_execute_rolls_back_and_keeps_its_failed_reply(db: Db, gid: str) -> None:
    acct, bar = await account(db), Barrier(db.engine)
    key = BranchKey(gid, "b1", Op.EXECUTE)
    refused = await bar.call(key, refusing(gid, "execute", acct))
    assert refused == Reply(Outcome.FAILED, message="insufficient funds")
    assert await db.count_effects(gid) == 0  # the business write rolled back
    assert await barrier_row(db, gid, Op.EXECUTE) == ("execute", int(Outcome.FAILED))
    # A retry gets the same refusal without running again ...
    assert await bar.call(key, never) == refused
    # ... and the compensation knows there is nothing to undo.
    undo = await bar.call(key.with_op(Op.COMPENSATE), never)
    assert undo.outcome is Outcome.OK and "refused" in undo.message
    assert await balance(db, acct) == 100


async def test_empty_result_is_stored_by_the_insert_and_a_result_by_an_update(db: Db, gid: str) -> None:
    acct, bar = await account(db), Barrier(db.engine)
    quiet, loud = BranchKey(gid, "b1", Op.EXECUTE), BranchKey(f"{gid}-r", "b1", Op.EXECUTE)
    assert await bar.call(quiet, effect(gid, "execute", acct, -1)) == Reply(Outcome.OK)
    assert await bar.call(loud, effect(f"{gid}-r", "execute", acct, -1, result=b"\x00receipt")) \
        == Reply(Outcome.OK, b"\x00receipt")
    assert await barrier_row(db, gid, Op.EXECUTE) == ("execute", int(Outcome.OK))
    assert await bar.call(quiet, never) == Reply(Outcome.OK)
    assert await bar.call(loud, never) == Reply(Outcome.OK, b"\x00receipt")  # byte for byte


async def test_refusal_racing_a_twin_answers_what_the_table_keeps(db: Db, gid: str) -> None:
    """A refusal is recorded after its rollback: a twin waiting on the key runs in between
    and its reply is what both calls answer (the business change applies once or never)."""
    acct, bar = await account(db), Barrier(db.engine)
    key = BranchKey(gid, "b1", Op.EXECUTE)

    async def slow_refusal(conn: AsyncConnection) -> bytes:
        await effect(gid, "execute", acct, -1)(conn)
        await asyncio.sleep(0.3)
        raise Refused("not now")

    async def twin() -> Reply:
        await asyncio.sleep(0.1)  # waits on the first call's uncommitted row
        return await bar.call(key, effect(gid, "execute", acct, -5, result=b"twin"))

    first, second = await asyncio.gather(bar.call(key, slow_refusal), twin())
    assert first == second, (first, second)
    applied = await db.count_effects(gid)
    if first.outcome is Outcome.OK:
        assert (applied, first.result, await balance(db, acct)) == (1, b"twin", 95)
    else:
        assert (applied, first.message, await balance(db, acct)) == (0, "not now", 100)
    assert await bar.call(key, never) == first
    assert await db.open_transactions() == 0


async def test_refusal_after_its_compensation_is_hanging(db: Db, gid: str) -> None:
    """The compensation lands between a refused execute's rollback and its record: the
    execute answers FAILED (hanging) and the compensation stays a null one."""
    acct, bar = await account(db), Barrier(db.engine)
    key = BranchKey(gid, "b1", Op.EXECUTE)
    undo: list[Reply] = []

    async def refuse_once_undone(conn: AsyncConnection) -> bytes:
        await effect(gid, "execute", acct, -1)(conn)
        raise Refused("insufficient funds")

    original = bar._record_refusal

    async def record_after_undo(k: BranchKey, reply: Reply) -> Reply:
        undo.append(await bar.call(key.with_op(Op.COMPENSATE), never))
        return await original(k, reply)

    bar._record_refusal = record_after_undo  # type: ignore[method-assign]
    reply = await bar.call(key, refuse_once_undone)
    assert reply.outcome is Outcome.FAILED and "hanging" in reply.message
    assert undo[0].outcome is Outcome.OK and "never ran" in undo[0].message
    assert await barrier_row(db, gid, Op.EXECUTE) == ("null-compensation", None)
    assert await db.count_effects(gid) == 0 and await balance(db, acct) == 100


async def test_null_compensation_then_hanging_execute_is_refused(db: Db, gid: str) -> None:
    acct, bar = await account(db), Barrier(db.engine)
    key = BranchKey(gid, "b1", Op.EXECUTE)
    undo = await bar.call(key.with_op(Op.COMPENSATE), never)
    assert undo.outcome is Outcome.OK and "never ran" in undo.message
    assert await barrier_row(db, gid, Op.EXECUTE) == ("null-compensation", None)
    late = await bar.call(key, effect(gid, "execute", acct, -10))
    assert late.outcome is Outcome.FAILED and "hanging" in late.message
    # Repeats change nothing either.
    assert await bar.call(key, never) == late
    assert await bar.call(key.with_op(Op.COMPENSATE), never) == undo
    assert await db.count_effects(gid) == 0
    assert await balance(db, acct) == 100


async def debited(db: Db, gid: str) -> tuple[str, Barrier, BranchKey]:
    """An account debited by 30 through the barrier: (account, barrier, compensate key)."""
    acct, bar = await account(db), Barrier(db.engine)
    key = BranchKey(gid, "b1", Op.EXECUTE)
    assert (await bar.call(key, effect(gid, "execute", acct, -30))).outcome is Outcome.OK
    return acct, bar, key.with_op(Op.COMPENSATE)


async def test_execute_then_compensate_each_apply_once(db: Db, gid: str) -> None:
    acct, bar, undo_key = await debited(db, gid)
    for _ in range(3):
        assert await bar.call(undo_key, effect(gid, "compensate", acct, +30)) == Reply(Outcome.OK)
    assert await db.count_effects(gid, "execute") == 1
    assert await db.count_effects(gid, "compensate") == 1
    assert await balance(db, acct) == 100


async def test_refused_compensation_is_not_recorded_so_a_retry_runs_it(db: Db, gid: str) -> None:
    acct, bar, undo_key = await debited(db, gid)
    refused = await bar.call(undo_key, refusing(gid, "compensate", acct))
    assert refused == Reply(Outcome.FAILED, message="insufficient funds")
    assert await barrier_row(db, gid, Op.COMPENSATE) is None
    assert await bar.call(undo_key, effect(gid, "compensate", acct, +30)) == Reply(Outcome.OK)
    assert await db.count_effects(gid, "compensate") == 1
    assert await balance(db, acct) == 100


async def test_abort_pairs_with_prepare_like_compensate_with_execute(db: Db, gid: str) -> None:
    bar = Barrier(db.engine)
    key = BranchKey(gid, "b1", Op.ABORT)
    assert (await bar.call(key, never)).outcome is Outcome.OK
    assert await barrier_row(db, gid, Op.PREPARE) == ("rollback", None)
    late = await bar.call(key.with_op(Op.PREPARE), never)
    assert late.outcome is Outcome.FAILED


async def test_many_concurrent_twins_run_once_and_agree(db: Db, gid: str) -> None:
    acct, bar = await account(db), Barrier(db.engine)
    key = BranchKey(gid, "b1", Op.EXECUTE)
    twins = [bar.call(key, effect(gid, "execute", acct, -1, result=b"r", delay=0.05))
             for _ in range(16)]
    replies = await asyncio.gather(*twins)
    assert set(replies) == {Reply(Outcome.OK, b"r")}
    undo_key = key.with_op(Op.COMPENSATE)
    undos = await asyncio.gather(*(bar.call(undo_key, effect(gid, "compensate", acct, +1, delay=0.02))
                                   for _ in range(16)))
    assert set(undos) == {Reply(Outcome.OK)}
    assert await db.count_effects(gid, "execute") == 1
    assert await db.count_effects(gid, "compensate") == 1
    assert await balance(db, acct) == 100
    assert await db.open_transactions() == 0


async def test_compensate_racing_execute_never_leaves_half_a_branch(db: Db) -> None:
    acct, bar = await account(db, 1000), Barrier(db.engine)
    rng = random.Random(7)

    async def later(delay: float, key: BranchKey, fn: BusinessFn) -> Reply:
        await asyncio.sleep(delay)
        return await bar.call(key, fn)

    rounds = []
    for i in range(24):
        gid = f"race-{db.kind}-{i}-{rng.random()}"
        key = BranchKey(gid, "b1", Op.EXECUTE)
        rounds.append((gid, asyncio.gather(
            later(rng.uniform(0, 0.02), key, effect(gid, "execute", acct, -5, delay=0.01)),
            later(rng.uniform(0, 0.02), key.with_op(Op.COMPENSATE),
                  effect(gid, "compensate", acct, +5)),
        )))
    outcomes = {"both": 0, "neither": 0}
    for gid, pair in rounds:
        done, undone = await pair
        assert undone.outcome is Outcome.OK
        executed = await db.count_effects(gid, "execute")
        compensated = await db.count_effects(gid, "compensate")
        if done.outcome is Outcome.OK:
            assert (executed, compensated) == (1, 1), gid
            outcomes["both"] += 1
        else:
            assert done.outcome is Outcome.FAILED and "hanging" in done.message
            assert (executed, compensated) == (0, 0), gid
            outcomes["neither"] += 1
    assert sum(outcomes.values()) == len(rounds)
    assert await balance(db, acct) == 1000
    assert await db.open_transactions() == 0


def crossing_locks(gid: str, first: str, second: str, met: asyncio.Barrier) -> BusinessFn:
    """Lock ``first``, wait until the twin holds its own first row, then lock ``second``."""
    state = {"tries": 0}

    async def run(conn: AsyncConnection) -> bytes:
        state["tries"] += 1
        await effect(gid, "execute", first, -1)(conn)
        if state["tries"] == 1:
            await met.wait()
        await effect(gid, "execute", second, -1)(conn)
        return b""

    return run


async def test_deadlock_is_retried_and_never_left_behind(db: Db, gid: str) -> None:
    a, b = await account(db), await account(db)
    met = asyncio.Barrier(2)
    bar = Barrier(db.engine, BarrierOptions(attempts=3))
    one = bar.call(BranchKey(gid, "b1", Op.EXECUTE), crossing_locks(gid, a, b, met))
    two = bar.call(BranchKey(gid, "b2", Op.EXECUTE), crossing_locks(gid, b, a, met))
    assert await asyncio.gather(one, two) == [Reply(Outcome.OK), Reply(Outcome.OK)]
    assert await db.count_effects(gid) == 4  # each branch moved both accounts, once
    assert await balance(db, a) == 98 and await balance(db, b) == 98
    assert await db.open_transactions() == 0


async def test_deadlock_without_retries_answers_retry_and_records_nothing(db: Db, gid: str) -> None:
    a, b = await account(db), await account(db)
    met = asyncio.Barrier(2)
    bar = Barrier(db.engine, BarrierOptions(attempts=1))
    replies = await asyncio.gather(
        bar.call(BranchKey(gid, "b1", Op.EXECUTE), crossing_locks(gid, a, b, met)),
        bar.call(BranchKey(gid, "b2", Op.EXECUTE), crossing_locks(gid, b, a, met)),
    )
    retried = [r for r in replies if r.outcome is Outcome.RETRY]
    assert len(retried) == 1 and "deadlock" in retried[0].message.lower()
    assert await db.count_effects(gid) == 2  # only the survivor's writes
    loser = "b1" if replies[0].outcome is Outcome.RETRY else "b2"
    t = barrier_table
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(t.c.id).where(t.c.gid == gid, t.c.branch == loser))).all()
    assert rows == []  # the coordinator's retry will run it afresh
    again = await bar.call(BranchKey(gid, loser, Op.EXECUTE), effect(gid, "execute", a, 0))
    assert again == Reply(Outcome.OK)


async def test_unexpected_error_rolls_back_barrier_and_business_together(db: Db, gid: str) -> None:
    acct, bar = await account(db), Barrier(db.engine)
    key = BranchKey(gid, "b1", Op.EXECUTE)

    async def buggy(conn: AsyncConnection) -> bytes:
        await effect(gid, "execute", acct, -10)(conn)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await bar.call(key, buggy)
    assert await barrier_row(db, gid, Op.EXECUTE) is None
    assert await db.count_effects(gid) == 0
    assert (await bar.call(key, effect(gid, "execute", acct, -10))).outcome is Outcome.OK
    assert await balance(db, acct) == 90


async def test_ids_compare_exactly(db: Db, gid: str) -> None:
    # MySQL's default collations would merge these; the barrier must not.
    bar = Barrier(db.engine)
    acct = await account(db)
    for variant in (gid, gid.upper(), gid + " "):
        reply = await bar.call(BranchKey(variant, "b1", Op.EXECUTE),
                               effect(variant, "execute", acct, -1))
        assert reply.outcome is Outcome.OK, variant
    assert await balance(db, acct) == 97


def test_branch_key_refuses_ids_the_table_cannot_hold() -> None:
    with pytest.raises(ValueError, match="gid"):
        BranchKey("", "b", Op.EXECUTE)
    with pytest.raises(ValueError, match="branch is 129"):
        BranchKey("g", "x" * 129, Op.EXECUTE)


async def test_barrier_transactions_run_in_a_guarded_session(db: Db, gid: str) -> None:
    """A saga step's session is ended by the server after session_timeout of silence (a
    connection lost mid-call must not hold the business rows' locks for hours)."""
    seen: list[int] = []

    async def read_guard(conn: AsyncConnection) -> bytes:
        query = ("SELECT @@SESSION.wait_timeout" if db.kind == "mariadb"
                 else "SELECT current_setting('idle_in_transaction_session_timeout')")
        value = str((await conn.exec_driver_sql(query)).scalar_one())
        seen.append(int(value.removesuffix("ms").removesuffix("s")))  # PG shows "17s", "17500ms"
        return b""

    barrier = Barrier(db.engine, BarrierOptions(session_timeout_s=17))
    reply = await barrier.call(BranchKey(gid, "b1", Op.EXECUTE), read_guard)
    assert reply.outcome is Outcome.OK
    assert seen == [17]
