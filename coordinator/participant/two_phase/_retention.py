"""Retention for ``txc_xa``: delete finished 2PC rows in small batches.

Only committed, aborted and refused rows go, and only once untouched for N days: rows of
branches still preparing or prepared are the recovery loop's map from XID to gid/branch.
An aborted row also makes a very late prepare vote no, so choose N as for the barrier
rows (well past a transaction's longest life); ``purge`` removes those witness rows.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.participant._db.sql import db_shifted
from coordinator.participant._db.tables import xa
from coordinator.participant._retention import PurgeOptions
from coordinator.participant.two_phase._table import FINISHED

_DAY = 86_400.0


async def purge_two_phase(
    engine: AsyncEngine, older_than_days: float, options: PurgeOptions | None = None
) -> int:
    """Delete finished ``txc_xa`` rows last updated more than N days ago; the count."""
    if older_than_days <= 0:
        raise ValueError("older_than_days must be positive")
    opts = options or PurgeOptions()
    async with engine.connect() as conn:
        cutoff: datetime = (
            await conn.execute(select(db_shifted(conn, -older_than_days * _DAY)))
        ).scalar_one()
    done = 0
    finished = [state.value for state in FINISHED]
    while True:
        async with engine.begin() as conn:
            # Pick by primary key first: the delete then locks only the rows it removes.
            picked = select(xa.c.xid).where(xa.c.state.in_(finished), xa.c.updated_at < cutoff)
            xids = list((await conn.execute(picked.limit(opts.batch_size))).scalars())
            if xids:
                await conn.execute(delete(xa).where(xa.c.xid.in_(xids), xa.c.state.in_(finished)))
        done += len(xids)
        if len(xids) < opts.batch_size:
            return done
        await asyncio.sleep(opts.pause_s)
