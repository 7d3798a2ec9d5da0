"""The run's own databases on the shared PostgreSQL and MariaDB servers: where they are,
creating them, rolling back the 2PC branches a run left prepared, and dropping them.

Every statement here goes to the real servers, never through a fault proxy."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator.participant import create_engine

log = logging.getLogger("txcoord.chaos")

# The names the harness makes (see isolation.Identity.database): anything else is not ours.
_OURS = re.compile(r"^txc_chaos_[0-9a-z_]+$")


@dataclass(frozen=True)
class Databases:
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    maria_host: str = "127.0.0.1"
    maria_port: int = 3306
    maria_user: str = "root"
    name: str = "txc_chaos"

    def pg(self, port: int | None = None, host: str | None = None) -> str:
        return (f"postgresql+asyncpg://{self.pg_user}@{host or self.pg_host}:"
                f"{port or self.pg_port}/{self.name}")

    def maria(self, port: int | None = None, host: str | None = None) -> str:
        return (f"mysql+aiomysql://{self.maria_user}@{host or self.maria_host}:"
                f"{port or self.maria_port}/{self.name}")

    def servers(self) -> dict[str, Any]:
        """Where the servers are (no database name): what a run's record keeps."""
        return {k: v for k, v in self.__dict__.items() if k != "name"}


def _admin(dbs: Databases) -> tuple[AsyncEngine, AsyncEngine]:
    # Short connect timeouts: an unreachable server must fail the run's start-up in seconds.
    pg = create_engine(dbs.pg().rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT",
                       connect_args={"timeout": 10})
    maria = create_engine(dbs.maria().rsplit("/", 1)[0] + "/mysql", isolation_level="AUTOCOMMIT",
                          connect_args={"connect_timeout": 10})
    return pg, maria


async def ensure_databases(dbs: Databases) -> None:
    """Create ``dbs.name`` on both servers if it does not exist."""
    admin_pg, admin_maria = _admin(dbs)
    try:
        async with admin_pg.connect() as conn:
            exists = (await conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                         {"n": dbs.name})).scalar()
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{dbs.name}"'))
        async with admin_maria.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{dbs.name}`"))
    finally:
        await admin_pg.dispose()
        await admin_maria.dispose()


async def drop_databases(dbs: Databases) -> None:
    """Roll back what is left prepared in ``dbs.name`` and drop it on both servers (each
    tried even if the other fails; the first error is raised).

    Only harness-made names are accepted: this runs on shared servers."""
    if not _OURS.match(dbs.name):
        raise ValueError(f"refusing to drop {dbs.name!r}: not a database the harness made")
    admin_pg, admin_maria = _admin(dbs)
    errors: list[Exception] = []
    try:
        for drop in (_drop_pg(dbs, admin_pg), _drop_maria(dbs.name, admin_maria)):
            try:
                await drop
            except Exception as exc:
                errors.append(exc)
    finally:
        await admin_pg.dispose()
        await admin_maria.dispose()
    if errors:
        raise errors[0]


async def _drop_pg(dbs: Databases, admin: AsyncEngine) -> None:
    async with admin.connect() as conn:
        if await _pg_exists(conn, dbs.name):
            await _pg_release(dbs)
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{dbs.name}" WITH (FORCE)'))


async def _drop_maria(name: str, admin: AsyncEngine) -> None:
    async with admin.connect() as conn:
        # Bounded: a prepared XA branch we did not see would otherwise block this for a year.
        await conn.execute(text("SET SESSION lock_wait_timeout = 20"))
        await _maria_release(conn, name)
        await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


async def release_in_doubt(dbs: Databases) -> int:
    """Roll back 2PC branches left prepared in ``dbs.name`` (they hold row locks that would
    block resetting the tables); how many there were."""
    count = await _pg_release(dbs)
    admin_maria = create_engine(dbs.maria(), isolation_level="AUTOCOMMIT")
    try:
        async with admin_maria.connect() as conn:
            count += await _maria_release(conn, dbs.name)
    finally:
        await admin_maria.dispose()
    return count


async def _pg_exists(conn: AsyncConnection, name: str) -> bool:
    found = await conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
    return found.scalar() is not None


async def _pg_release(dbs: Databases) -> int:
    # ROLLBACK PREPARED must run in the database the branch was prepared in.
    engine = create_engine(dbs.pg(), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            gids = [r[0] for r in await conn.execute(
                text("SELECT gid FROM pg_prepared_xacts WHERE database = :d"), {"d": dbs.name})]
            for gid in gids:
                await conn.execute(text(f"ROLLBACK PREPARED '{_plain(gid)}'"))
    finally:
        await engine.dispose()
    if gids:
        log.warning("rolled back %d prepared PostgreSQL branches in %s", len(gids), dbs.name)
    return len(gids)


async def _maria_release(conn: AsyncConnection, name: str) -> int:
    """XA RECOVER is server-wide: only the XIDs this database's ``txc_xa`` lists are ours."""
    if not await _has_xa_table(conn, name):
        return 0
    ours = {r[0] for r in await conn.execute(text(f"SELECT xid FROM `{name}`.txc_xa"))}
    mine = [xid for row in await conn.execute(text("XA RECOVER"))
            if (xid := xid_text(row[3])) in ours]
    for xid in mine:
        try:
            await conn.execute(text(f"XA ROLLBACK '{_plain(xid)}'"))
        except DBAPIError as exc:
            # MariaDB answers a rollback of a prepared branch with XA_RBROLLBACK (1402)
            # once it has rolled it back; XAER_NOTA (1397): someone else just did.
            if getattr(exc.orig, "args", (None,))[0] not in (1397, 1402):
                raise
    if mine:
        log.warning("rolled back %d prepared MariaDB branches of %s", len(mine), name)
    return len(mine)


async def _has_xa_table(conn: AsyncConnection, schema: str) -> bool:
    found = await conn.execute(text("SELECT count(*) FROM information_schema.tables "
                                    "WHERE table_schema = :s AND table_name = 'txc_xa'"),
                               {"s": schema})
    return bool(found.scalar())


def xid_text(data: Any) -> str:
    return data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)


def _plain(xid: str) -> str:
    """XIDs go into statements that take no bind parameters: refuse anything odd."""
    if not re.fullmatch(r"[\w:.\-]+", xid):
        raise ValueError(f"unexpected transaction id {xid[:80]!r}")
    return xid
