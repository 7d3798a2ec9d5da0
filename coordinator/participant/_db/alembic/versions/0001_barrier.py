"""txc_barrier: one row per (gid, branch, op), with the stored reply.

Revision ID: 0001_barrier
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001_barrier"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MYSQL = ("mysql", "mariadb")
# Frozen copies of the column types in coordinator/participant/_db/tables.py: a revision
# must keep creating what it created when it was written.
_ID = sa.String(128).with_variant(mysql.VARBINARY(512), *_MYSQL)
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), *_MYSQL)
_BLOB = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), *_MYSQL)


def upgrade() -> None:
    op.create_table(
        "txc_barrier",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("gid", _ID, nullable=False),
        sa.Column("branch", _ID, nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=True),
        sa.Column("result", _BLOB, nullable=True),
        sa.Column("message", sa.String(512), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.UniqueConstraint("gid", "branch", "op", name="uq_txc_barrier_key"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_txc_barrier_created_at", "txc_barrier", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_txc_barrier_created_at", table_name="txc_barrier")
    op.drop_table("txc_barrier")
