"""Retention on real PostgreSQL and MariaDB: old barrier rows and old sent messages go,
in small batches; recent rows and undelivered messages stay."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from coordinator.cli import _migrate
from coordinator.participant import Barrier, BranchKey, Op, PurgeOptions, outbox, purge
from coordinator.participant._db.migrations import head_revision
from coordinator.participant._db.tables import barrier as barrier_table
from coordinator.participant._db.tables import outbox as outbox_table
from coordinator.participant.outbox import START_SAGA

from .conftest import Db

pytestmark = pytest.mark.integration


def days_ago(db: Db, days: float) -> datetime:
    moment = datetime.now(UTC) - timedelta(days=days)
    # DATETIME(6) on MySQL holds UTC without a zone.
    return moment if db.kind == "postgresql" else moment.replace(tzinfo=None)


async def nothing(conn: object) -> bytes:
    return b""


async def barrier_rows(db: Db, prefix: str) -> int:
    t = barrier_table
    async with db.engine.connect() as conn:
        stmt = select(func.count()).select_from(t).where(t.c.gid.like(f"{prefix}%"))
        return int((await conn.execute(stmt)).scalar_one())


async def statuses(db: Db, ids: list[int]) -> list[str | None]:
    t = outbox_table
    async with db.engine.connect() as conn:
        found = dict((await conn.execute(select(t.c.id, t.c.status).where(t.c.id.in_(ids)))).all())
    return [found.get(i) for i in ids]


async def test_purge_removes_only_old_barrier_rows_and_old_sent_messages(db: Db) -> None:
    prefix = f"ret-{uuid.uuid4().hex[:8]}"
    bar = Barrier(db.engine)
    for i in range(5):  # 5 rows, aged below
        await bar.call(BranchKey(f"{prefix}-old-{i}", "b1", Op.EXECUTE), nothing)
    # A null compensation: 2 recent rows (compensate + the execute row it blocks).
    await bar.call(BranchKey(f"{prefix}-new", "b1", Op.COMPENSATE), nothing)
    async with db.engine.begin() as conn:
        ids = [await outbox.add(conn, START_SAGA, b"x") for _ in range(5)]
        t = barrier_table
        await conn.execute(update(t).where(t.c.gid.like(f"{prefix}-old-%"))
                           .values(created_at=days_ago(db, 10)))
        o = outbox_table
        old_sent, new_sent, old_pending, old_failed, _ = ids
        await conn.execute(update(o).where(o.c.id.in_([old_sent, new_sent]))
                           .values(status="sent", sent_at=days_ago(db, 10)))
        await conn.execute(update(o).where(o.c.id == new_sent).values(sent_at=days_ago(db, 1)))
        await conn.execute(update(o).where(o.c.id == old_failed).values(status="failed"))
        await conn.execute(update(o).where(o.c.id.in_(ids)).values(created_at=days_ago(db, 10)))
        await conn.execute(update(o).where(o.c.id == old_pending).values(status="parked"))

    result = await purge(db.engine, 7, PurgeOptions(batch_size=2, pause_s=0))
    assert (result.barrier_rows, result.outbox_rows) == (5, 1)
    assert await barrier_rows(db, f"{prefix}-old") == 0
    assert await barrier_rows(db, f"{prefix}-new") == 2
    assert await statuses(db, ids[:4]) == [None, "sent", "parked", "failed"]
    assert await purge(db.engine, 7) == type(result)(0, 0)


async def test_purge_refuses_a_non_positive_age(db: Db) -> None:
    with pytest.raises(ValueError, match="positive"):
        await purge(db.engine, 0)


async def test_txc_migrate_can_purge(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="txc")
    _migrate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["migrate", "--dsn", db.dsn, "--purge-older-than-days", "30"])
    assert await asyncio.to_thread(args.func, args) == 0
    out = capsys.readouterr().out
    assert f"at revision {head_revision()} (head)" in out
    assert "barrier rows," in out and "finished 2PC branch rows older than 30 days" in out
    args = parser.parse_args(["migrate", "--dsn", db.dsn, "--down", "base",
                              "--purge-older-than-days", "30"])
    assert args.func(args) == 2  # never purge while rolling back
