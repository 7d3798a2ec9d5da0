"""The participant tables' schema, for tools that manage it (``txc migrate`` is one):
migrate up or down, read the revision a database is at and the SDK's head, check a
connection, and show a DSN or a database error without secrets or row values.

Services usually need only ``coordinator.participant.upgrade``.
"""

from __future__ import annotations

from coordinator.participant._db.dsn import check_connection, mask
from coordinator.participant._db.errors import describe
from coordinator.participant._db.migrations import (
    MigrationError,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)

__all__ = ["MigrationError", "check_connection", "current_revision", "describe", "downgrade",
           "head_revision", "mask", "upgrade"]
