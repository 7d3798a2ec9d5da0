"""txc_xa: the 2PC branches of this database, XID -> (gid, branch), and what was answered.

Revision ID: 0003_two_phase
Revises: 0002_outbox
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003_two_phase"
down_revision: str | Sequence[str] | None = "0002_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MYSQL = ("mysql", "mariadb")
# Frozen copies of the column types in coordinator/participant/_db/tables.py.
_ID = sa.String(128).with_variant(mysql.VARBINARY(512), *_MYSQL)
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), *_MYSQL)
_BLOB = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), *_MYSQL)


def upgrade() -> None:
    op.create_table(
        "txc_xa",
        sa.Column("xid", sa.String(64), primary_key=True),
        sa.Column("gid", _ID, nullable=False),
        sa.Column("branch", _ID, nullable=False),
        sa.Column("operation", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.String(512), nullable=True),
        sa.Column("result", _BLOB, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    # Retention: finished rows by age.
    op.create_index("ix_txc_xa_updated_at", "txc_xa", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_txc_xa_updated_at", table_name="txc_xa")
    op.drop_table("txc_xa")
