"""The barrier's hot-path statements as driver SQL, written once per dialect.

A branch call runs two to five small statements. Building each as a SQLAlchemy Core
construct and looking up its compiled form costs more Python than the statement's round
trip on a 2-core machine (profiled: ~0.3 ms of CPU per INSERT), so the barrier sends these
fixed strings through ``exec_driver_sql``: no construct, no compilation, no cache key.
The schema stays SQLAlchemy's (``tables.barrier``, the migrations); a test checks these
strings against it by running them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.participant._db.sql import is_mysql
from coordinator.participant._db.tables import BARRIER_TABLE


@dataclass(frozen=True)
class BarrierSql:
    """Positional parameters, in the driver's own style ($n / %s)."""

    insert: str  # gid, branch, op, reason, outcome, message -> rowcount 1 when inserted
    read: str  # gid, branch, op -> reason, outcome, result, message (locking read)
    store: str  # outcome, result, message, gid, branch, op
    mysql: bool

    def blob(self, data: bytes) -> bytes | str:
        """``data`` as the ``store`` statement binds it: hex for UNHEX() on MySQL (aiomysql
        0.3 cannot bind bytes with PyMySQL 1.2+, see ``sql.blob``)."""
        return data.hex() if self.mysql else data


_COLUMNS = "gid, branch, op, reason, outcome, message, created_at"
_KEY = "gid = {0} AND branch = {1} AND op = {2}"

POSTGRES = BarrierSql(
    insert=(f"INSERT INTO {BARRIER_TABLE} ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, now()) "
            "ON CONFLICT DO NOTHING"),
    # A locking read sees the latest committed row even under REPEATABLE READ snapshots.
    read=(f"SELECT reason, outcome, result, message FROM {BARRIER_TABLE} WHERE "
          f"{_KEY.format('$1', '$2', '$3')} FOR SHARE"),
    store=(f"UPDATE {BARRIER_TABLE} SET outcome = $1, result = $2, message = $3 WHERE "
           f"{_KEY.format('$4', '$5', '$6')}"),
    mysql=False,
)

MYSQL = BarrierSql(
    insert=(f"INSERT IGNORE INTO {BARRIER_TABLE} ({_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, UTC_TIMESTAMP(6))"),
    read=(f"SELECT reason, outcome, result, message FROM {BARRIER_TABLE} WHERE "
          f"{_KEY.format('%s', '%s', '%s')} LOCK IN SHARE MODE"),
    store=(f"UPDATE {BARRIER_TABLE} SET outcome = %s, result = UNHEX(%s), message = %s WHERE "
           f"{_KEY.format('%s', '%s', '%s')}"),
    mysql=True,
)


def barrier_sql(conn: AsyncConnection) -> BarrierSql:
    return MYSQL if is_mysql(conn) else POSTGRES
