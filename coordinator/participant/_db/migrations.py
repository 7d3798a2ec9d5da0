"""Run the participant tables' Alembic migrations from Python (and from ``txc migrate``).

The revisions are package data in ``alembic/`` beside this module; they also run from
Alembic's own command line (``alembic -x dsn=URL upgrade head`` at the repository root,
whose alembic.ini points there). Their history lives in ``txc_alembic_version`` so it
never collides with a service's own ``alembic_version``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.participant._db.errors import ParticipantError

VERSION_TABLE = "txc_alembic_version"


class MigrationError(ParticipantError):
    """The migration scripts cannot be found or a target revision is unknown."""


def migrations_dir() -> Path:
    """The Alembic scripts: package data of the SDK, beside this module (``alembic/``)."""
    path = Path(__file__).with_name("alembic")
    if not (path / "env.py").is_file():
        raise MigrationError(f"participant migrations not found at {path}; reinstall txcoord")
    return path


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config for the participant migrations (no alembic.ini needed).

    With ``connection`` the migrations run on it (inside its transaction) instead of
    opening their own; logging configuration is left to the application.
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["configure_logger"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the repository always ships revisions
        raise MigrationError("no migration revisions found")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None before the first migration."""

    def read(connection: Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> str | None:
    """Migrate up to ``revision``; returns the revision the database is at afterwards."""
    await _run(engine, lambda config: command.upgrade(config, revision))
    return await current_revision(engine)


async def downgrade(engine: AsyncEngine, revision: str) -> str | None:
    """Migrate down to ``revision`` (``base`` removes the tables); returns the new revision."""
    await _run(engine, lambda config: command.downgrade(config, revision))
    return await current_revision(engine)


async def _run(engine: AsyncEngine, step: Callable[[Config], None]) -> None:
    def run(connection: Connection) -> None:
        try:
            step(alembic_config(connection))
        except CommandError as exc:
            raise MigrationError(str(exc)) from None

    async with engine.begin() as conn:
        await conn.run_sync(run)
