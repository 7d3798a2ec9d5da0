"""txc_outbox: the local message table the relay delivers from.

Revision ID: 0002_outbox
Revises: 0001_barrier
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002_outbox"
down_revision: str | Sequence[str] | None = "0001_barrier"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MYSQL = ("mysql", "mariadb")
_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), *_MYSQL)
_BLOB = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), *_MYSQL)


def upgrade() -> None:
    op.create_table(
        "txc_outbox",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", _BLOB, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", _TIME, nullable=False),
        sa.Column("claim_token", sa.String(36), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("sent_at", _TIME, nullable=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    # The relay's claim query: pending rows that are due.
    op.create_index("ix_txc_outbox_due", "txc_outbox", ["status", "available_at"])
    # Retention: sent rows by age.
    op.create_index("ix_txc_outbox_sent", "txc_outbox", ["status", "sent_at"])


def downgrade() -> None:
    op.drop_index("ix_txc_outbox_sent", table_name="txc_outbox")
    op.drop_index("ix_txc_outbox_due", table_name="txc_outbox")
    op.drop_table("txc_outbox")
