"""Retention for ``txc_xa``: delete finished 2PC rows in small batches.

Only committed, aborted and refused rows go, and only once untouched for N days: rows of
branches still preparing or prepared are the recovery loop's map from XID to gid/branch.
An aborted row also makes a very late prepare vote no, so choose N as for the barrier
rows (well past a transaction's longest life); ``purge`` removes those witness rows.
"""

from __future__ import annotations

from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.participant._db.tables import xa
from coordinator.participant._retention import PurgeOptions, cutoff, purge_batches
from coordinator.participant.two_phase._table import FINISHED


async def purge_two_phase(
    engine: AsyncEngine, older_than_days: float, options: PurgeOptions | None = None
) -> int:
    """Delete finished ``txc_xa`` rows last updated more than N days ago; the count."""
    before = await cutoff(engine, older_than_days)
    finished = xa.c.state.in_([state.value for state in FINISHED])
    # Checked again by the delete: only finished rows may go, whatever changed meanwhile.
    return await purge_batches(engine, xa, xa.c.xid, and_(finished, xa.c.updated_at < before),
                               options or PurgeOptions(), recheck=finished)
