"""Retention: delete old barrier rows and sent outbox messages in small batches.

Each batch is its own short transaction that locks only the rows it deletes (picked by
primary key first), so live barrier calls and relays never wait behind a purge.

Choose the age well past the longest time a request for a transaction can still
arrive (saga deadline + retries + operator replays): once a barrier row is gone, a very
late duplicate would run again and a very late compensation would be taken for a null
compensation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.participant._db.sql import db_shifted
from coordinator.participant._db.tables import barrier, outbox
from coordinator.participant.outbox._messages import Status

_DAY = 86_400.0


@dataclass(frozen=True)
class PurgeOptions:
    """How a purge paces its deletes, so that live calls never queue behind it."""

    batch_size: int = 1000
    """Rows deleted per (short) transaction."""

    pause_s: float = 0.01
    """Pause between batches."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.pause_s < 0:
            raise ValueError("batch_size must be at least 1 and pause_s not negative")


@dataclass(frozen=True)
class PurgeResult:
    barrier_rows: int
    outbox_rows: int


async def purge(
    engine: AsyncEngine, older_than_days: float, options: PurgeOptions | None = None
) -> PurgeResult:
    """Delete barrier rows created, and outbox messages sent, more than N days ago.

    Pending and failed messages are never purged: they are work not yet done.
    """
    opts = options or PurgeOptions()
    before = await cutoff(engine, older_than_days)
    barrier_rows = await purge_batches(engine, barrier, barrier.c.id, barrier.c.created_at < before, opts)
    sent = and_(outbox.c.status == Status.SENT.value, outbox.c.sent_at < before)
    outbox_rows = await purge_batches(engine, outbox, outbox.c.id, sent, opts)
    return PurgeResult(barrier_rows, outbox_rows)


async def cutoff(engine: AsyncEngine, older_than_days: float) -> datetime:
    """N days before now by the database server's clock, as for every other timestamp in
    these tables."""
    if older_than_days <= 0:
        raise ValueError("older_than_days must be positive")
    async with engine.connect() as conn:
        found: datetime = (
            await conn.execute(select(db_shifted(conn, -older_than_days * _DAY)))
        ).scalar_one()
    return found


async def purge_batches(engine: AsyncEngine, table: Table, key: ColumnElement[Any],
                        condition: ColumnElement[bool], opts: PurgeOptions,
                        recheck: ColumnElement[bool] | None = None) -> int:
    """Delete ``table``'s rows matching ``condition`` in batches; the count. Each batch
    picks primary keys (``key``) first, so its delete locks only the rows it removes;
    ``recheck`` is a condition the delete checks again on those rows."""
    total = 0
    while True:
        async with engine.begin() as conn:
            picked = await conn.execute(select(key).where(condition).limit(opts.batch_size))
            batch = list(picked.scalars())
            if batch:
                chosen = key.in_(batch) if recheck is None else and_(key.in_(batch), recheck)
                await conn.execute(delete(table).where(chosen))
        total += len(batch)
        if len(batch) < opts.batch_size:
            return total
        await asyncio.sleep(opts.pause_s)
