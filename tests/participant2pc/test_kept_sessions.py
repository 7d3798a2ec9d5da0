"""MySQL/MariaDB: the preparing session is kept until phase 2 and finishes its own XID.

MariaDB 10.11 can lose an XA COMMIT that races with the end of the session that prepared
the XID (see test_local.test_after_detach_any_session_finishes_the_prepared_branch_at_once).
A kept session never ends before phase 2, so there is no race; a session that is given
back (after its hold, at stop, past max_held_sessions) or lost is waited out before any
other session finishes the XID.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.pool import NullPool

from coordinator import ppb
from coordinator.participant import (
    BarrierOptions,
    HostOptions,
    Op,
    ParticipantHost,
    TwoPhaseOptions,
    create_engine,
)
from coordinator.participant.two_phase import xid_for

from ._service import build
from .conftest import Db, call

pytestmark = pytest.mark.integration

OK = ppb.OUTCOME_OK


@pytest.fixture
def maria(dbs: dict[str, Db]) -> Db:
    return dbs["mariadb"]


def kept(host: ParticipantHost) -> int:
    return len(host._two_phase.sessions.held)


async def prepare_commit(host: ParticipantHost, db: Db, gid: str) -> str:
    row = f"k-{uuid.uuid4().hex[:10]}"
    assert (await call(host, Op.PREPARE, gid, "a", {"id": row})).outcome == OK
    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK
    return row


async def test_300_kept_sessions_commit_their_own_xids_and_none_is_lost(maria: Db) -> None:
    host = build(maria.engine, HostOptions(two_phase=TwoPhaseOptions(max_held_sessions=10,
                                                                       max_concurrent_prepares=10)))
    gids = [f"kept-{uuid.uuid4().hex[:8]}" for _ in range(300)]
    made: list[str] = []
    for i in range(0, len(gids), 10):  # ten at a time, each committed on its preparing session
        made += await asyncio.gather(*(prepare_commit(host, maria, g) for g in gids[i:i + 10]))
    assert kept(host) == 0
    left = await maria.prepared()
    assert not [g for g in gids if xid_for(g, "a") in left]  # none left prepared, listed or not
    assert [await maria.value(row) for row in made] == [1] * len(made)  # every commit landed
    assert [await maria.outcome(g, "a") for g in gids] == ["committed"] * len(gids)


async def test_kept_sessions_are_bounded(maria: Db) -> None:
    host = build(maria.engine, HostOptions(two_phase=TwoPhaseOptions(max_held_sessions=2)))
    gids = [f"bound-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    for gid in gids:
        assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK
    assert kept(host) == 2  # the other two closed their sessions and waited them out
    for gid in gids:
        assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK
        assert await maria.value(gid) == 1
    assert kept(host) == 0


def test_by_default_half_the_pool_may_be_kept() -> None:
    def held(**pool: int) -> int:
        return TwoPhaseOptions().held_sessions(create_engine("mysql://svc@db/shop", **pool))

    assert held(pool_size=20, max_overflow=20) == 20
    assert held() == 7  # SQLAlchemy's 5 + 10
    assert held(pool_size=4, max_overflow=0) == 6  # never fewer than 6
    assert held(poolclass=NullPool) == 6
    assert TwoPhaseOptions(max_held_sessions=0).held_sessions(create_engine("mysql://svc@db/shop")) == 0


async def test_concurrent_branches_keep_their_sessions_within_the_default(maria: Db) -> None:
    """The test engine's pool is 20 + 10: up to 15 prepared branches keep their sessions."""
    host = build(maria.engine, HostOptions(two_phase=TwoPhaseOptions(max_concurrent_prepares=12)))
    gids = [f"many-{uuid.uuid4().hex[:8]}" for _ in range(12)]
    votes = await asyncio.gather(*(call(host, Op.PREPARE, g, "a", {"id": g}) for g in gids))
    assert {v.outcome for v in votes} == {OK}
    assert kept(host) == 12
    for gid in gids:
        assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK
    assert kept(host) == 0 and host._two_phase.sessions.held.spares == 12  # for the next branches
    assert [await maria.value(g) for g in gids] == [1] * 12
    await host._two_phase.close()
    assert host._two_phase.sessions.held.spares == 0


async def test_a_kept_session_is_given_back_after_its_hold(maria: Db) -> None:
    # Hold = session_timeout_s / 2 = 1 s.
    options = HostOptions(call_timeout_s=1.0, barrier=BarrierOptions(session_timeout_s=2.0))
    host = build(maria.engine, options)
    gid = f"hold-{uuid.uuid4().hex[:8]}"
    assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK
    assert kept(host) == 1
    await asyncio.sleep(1.6)
    assert kept(host) == 0 and xid_for(gid, "a") in await maria.prepared()
    assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK  # from another session
    assert await maria.value(gid) == 1


async def test_a_lost_kept_session_is_waited_out_then_finished_elsewhere(maria: Db) -> None:
    host = build(maria.engine, HostOptions())
    for decision, expected in ((Op.COMMIT, 1), (Op.ABORT, None)):
        gid = f"lost-{uuid.uuid4().hex[:8]}"
        assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK
        session = host._two_phase.sessions.held._held[xid_for(gid, "a")].session
        async with maria.engine.connect() as admin:
            await admin.exec_driver_sql(f"KILL CONNECTION {session}")
        reply = await call(host, decision, gid, "a", {})
        assert reply.outcome == OK, reply.message
        assert await maria.value(gid) == expected
        assert xid_for(gid, "a") not in await maria.prepared()


async def test_stop_gives_kept_sessions_back_and_another_host_finishes_them(maria: Db) -> None:
    first = build(maria.engine, HostOptions())
    gid = f"stop-{uuid.uuid4().hex[:8]}"
    await first.start("127.0.0.1:0")
    assert (await call(first, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK
    assert kept(first) == 1
    await first.stop(0)
    assert kept(first) == 0 and xid_for(gid, "a") in await maria.prepared()
    second = build(maria.engine, HostOptions())
    assert (await call(second, Op.COMMIT, gid, "a", {})).outcome == OK
    assert await maria.value(gid) == 1
