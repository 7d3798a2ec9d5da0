"""txc_outbox.trace: the trace context a message was written in, so that its delivery
continues that trace (an OpenTelemetry carrier as JSON, at most 1 KiB of keys and values).

Revision ID: 0004_outbox_trace
Revises: 0003_two_phase
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_outbox_trace"
down_revision: str | Sequence[str] | None = "0003_two_phase"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no row, and messages written before it (or
    # outside any trace) have none.
    op.add_column("txc_outbox", sa.Column("trace", sa.String(2048), nullable=True))


def downgrade() -> None:
    op.drop_column("txc_outbox", "trace")
