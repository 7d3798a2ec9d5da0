"""SQLAlchemy Core metadata of the participant tables.

The Alembic revisions in ``alembic/versions`` (beside this module) create exactly this schema (a test
compares them). Every table is defined here, so ``metadata`` is complete whatever was
imported first. They carry a ``txc_`` prefix so they sit beside a service's own tables
without clashing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from coordinator.participant._types import MAX_ID_CHARS

metadata = MetaData()

BARRIER_TABLE = "txc_barrier"
OUTBOX_TABLE = "txc_outbox"
XA_TABLE = "txc_xa"
OPERATION_CHARS = 128
MESSAGE_CHARS = 512
TRACE_CHARS = 2048  # a carrier's 1 KiB of keys and values, JSON-quoted

_MYSQL = ("mysql", "mariadb")


class Utf8VarBinary(mysql.VARBINARY):
    """MySQL VARBINARY holding UTF-8 text, bound and read as ``str``.

    Bound as text: the server stores the connection's utf8mb4 bytes (and aiomysql cannot
    bind ``bytes`` with PyMySQL 1.2+, see ``sql.blob``).
    """

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        return lambda value: value.decode() if isinstance(value, bytes) else value


def id_string() -> TypeEngine[str]:
    """gid/branch column type: VARCHAR on PostgreSQL, VARBINARY on MySQL.

    MySQL compares VARCHARs through a collation that is case-insensitive by default and
    pads trailing spaces, so "Order-1" and "order-1 " would share one barrier row.
    VARBINARY compares bytes exactly (4 bytes per character covers utf8mb4).
    """
    return String(MAX_ID_CHARS).with_variant(Utf8VarBinary(4 * MAX_ID_CHARS), *_MYSQL)


def timestamp() -> TypeEngine[datetime]:
    """UTC time: timestamptz on PostgreSQL, DATETIME(6) holding UTC on MySQL."""
    return DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), *_MYSQL)


def blob() -> TypeEngine[bytes]:
    """Payloads and results: bytea on PostgreSQL, MEDIUMBLOB (16 MiB) on MySQL."""
    return LargeBinary().with_variant(mysql.MEDIUMBLOB(), *_MYSQL)


barrier = Table(
    BARRIER_TABLE,
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("gid", id_string(), nullable=False),
    Column("branch", id_string(), nullable=False),
    Column("op", String(16), nullable=False),
    # Who inserted the row: the op itself, or "null-compensation"/"rollback" when an
    # undo inserted its forward op's row to block a late (hanging) forward call.
    Column("reason", String(32), nullable=False),
    # The stored reply, so a duplicate request gets the same answer. NULL on rows an
    # undo inserted for its forward op (that op never ran).
    Column("outcome", SmallInteger, nullable=True),
    Column("result", blob(), nullable=True),
    Column("message", String(MESSAGE_CHARS), nullable=True),
    Column("created_at", timestamp(), nullable=False),
    UniqueConstraint("gid", "branch", "op", name="uq_txc_barrier_key"),
    Index("ix_txc_barrier_created_at", "created_at"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

outbox = Table(
    OUTBOX_TABLE,
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("payload", blob(), nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | failed | discarded
    Column("attempts", Integer, nullable=False),
    # Earliest time a relay may (re)claim the row: pushed forward by a claim (lease)
    # and by backoff after a failed attempt.
    Column("available_at", timestamp(), nullable=False),
    Column("claim_token", String(36), nullable=True),
    Column("last_error", String(MESSAGE_CHARS), nullable=True),
    Column("created_at", timestamp(), nullable=False),
    Column("sent_at", timestamp(), nullable=True),
    # The trace context the message was written in (JSON; see coordinator.telemetry._tracing).
    Column("trace", String(TRACE_CHARS), nullable=True),
    Index("ix_txc_outbox_due", "status", "available_at"),
    Index("ix_txc_outbox_sent", "status", "sent_at"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# One row per prepared (or refused, or aborted) 2PC branch, keyed by its XID; see
# ``two_phase._table`` for how the rows are used.
xa = Table(
    XA_TABLE,
    metadata,
    Column("xid", String(64), primary_key=True),
    Column("gid", id_string(), nullable=False),
    Column("branch", id_string(), nullable=False),
    Column("operation", String(OPERATION_CHARS), nullable=False),
    Column("state", String(16), nullable=False),
    # The vote as answered (a duplicate prepare gets it again, byte for byte).
    Column("message", String(MESSAGE_CHARS), nullable=True),
    Column("result", blob(), nullable=True),
    Column("created_at", timestamp(), nullable=False),
    Column("updated_at", timestamp(), nullable=False),
    Index("ix_txc_xa_updated_at", "updated_at"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
