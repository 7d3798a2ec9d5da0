"""Alembic migrations of the participant SDK's tables (txc_barrier, txc_outbox, txc_xa).

Installed with txcoord as the package ``txcoord_migrations``, so that ``txc migrate`` works
from a wheel; in a checkout they are read here, in ``migrations/``. Run them with
``txc migrate --dsn URL`` or ``coordinator.participant.upgrade``.
"""
