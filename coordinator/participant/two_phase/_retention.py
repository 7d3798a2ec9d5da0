"""Retention for ``txc_xa``: delete finished 2PC rows in small batches.

Only finished rows go, and only once untouched for N days: refused, aborted and (written
by versions before 2026-12-05) committed rows, and prepared rows whose XID the server no
longer holds prepared (a committed branch keeps its row "prepared", with the vote's
result). Rows of branches still prepared are the recovery loop's map from XID to
gid/branch, and stay. An aborted row also makes a very late prepare vote no, so choose N
as for the barrier rows (well past a transaction's longest life); ``purge`` removes those
witness rows.
"""

from __future__ import annotations

from sqlalchemy import and_, or_
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.participant._db.tables import xa
from coordinator.participant._retention import PurgeOptions, cutoff, purge_batches
from coordinator.participant.two_phase._table import FINISHED, XaState
from coordinator.participant.two_phase._xa import xa_driver


async def purge_two_phase(
    engine: AsyncEngine, older_than_days: float, options: PurgeOptions | None = None
) -> int:
    """Delete finished ``txc_xa`` rows last updated more than N days ago; the count."""
    before = await cutoff(engine, older_than_days)
    async with engine.connect() as conn:
        # Listed before the rows are picked: an XID prepared by then stays; one prepared
        # later belongs to a row written later (a row's XID is prepared at most once).
        still_prepared = await xa_driver(conn).prepared(conn)
    done = xa.c.state == XaState.PREPARED.value
    if still_prepared:
        done = and_(done, xa.c.xid.not_in(still_prepared))
    finished = or_(xa.c.state.in_([state.value for state in FINISHED]), done)
    # Checked again by the delete: only finished rows may go, whatever changed meanwhile.
    return await purge_batches(engine, xa, xa.c.xid, and_(finished, xa.c.updated_at < before),
                               options or PurgeOptions(), recheck=finished)
