"""DSN handling: parse, check the driver, connect once, and never show the password."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from coordinator.participant._db.errors import DsnError, describe
from coordinator.participant._db.pool import mysql_pool_options, tune_mysql_pool

# Async drivers the SDK is tested with. (SQLAlchemy names MariaDB "mysql" or "mariadb".)
SUPPORTED_DRIVERS = frozenset({"postgresql+asyncpg", "mysql+aiomysql", "mariadb+aiomysql"})

# The URLs libpq, psql and most tools use name a database but no driver: the SDK's async
# driver for it is meant ("postgres" is libpq's other spelling, which SQLAlchemy dropped).
ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
}
ACCEPTED = ("postgresql://, postgres://, mysql://, mariadb:// (run with asyncpg and aiomysql), "
            "or with the driver named: postgresql+asyncpg, mysql+aiomysql, mariadb+aiomysql")


def mask(dsn: str | URL) -> str:
    """The DSN with its password replaced by ``***`` (unparseable input is shown cut short)."""
    try:
        url = dsn if isinstance(dsn, URL) else make_url(dsn)
    except ArgumentError:
        head = str(dsn).split("@", 1)
        return f"***@{head[1]}" if len(head) == 2 else str(dsn)[:40]
    return url.render_as_string(hide_password=True)


def parse(dsn: str) -> URL:
    """Parse and check a DSN (one naming no driver gets the async one, see
    :func:`with_async_driver`); :class:`DsnError` names it (password hidden) when it is wrong."""
    if not dsn:
        raise DsnError("no DSN given (pass --dsn or set TXC_DSN)")
    try:
        url = with_async_driver(make_url(dsn))
    except ArgumentError as exc:
        raise DsnError(f"cannot parse DSN {mask(dsn)!r}: {exc}") from None
    if url.drivername not in SUPPORTED_DRIVERS:
        raise DsnError(f"DSN {mask(url)!r} uses driver {url.drivername!r}; supported: {ACCEPTED}")
    if not url.database:
        raise DsnError(f"DSN {mask(url)!r} names no database")
    return url


def with_async_driver(url: URL) -> URL:
    """``url`` with the SDK's async driver when it names none (``postgresql://app@db/app``
    runs on asyncpg, ``mysql://`` and ``mariadb://`` on aiomysql). On asyncpg, libpq's
    ``sslmode`` is passed as ``ssl``, which takes the same values."""
    url = url.set(drivername=ASYNC_DRIVERS.get(url.drivername, url.drivername))
    if url.drivername == "postgresql+asyncpg" and "sslmode" in url.query:
        query = {k: v for k, v in url.query.items() if k != "sslmode"}
        url = url.set(query={**query, "ssl": url.query["sslmode"]})
    return url


def create_engine(dsn: str, **engine_options: Any) -> AsyncEngine:
    """An AsyncEngine for ``dsn``; statement parameters stay out of error messages.

    No ``pool_pre_ping`` (a round trip on every checkout): on PostgreSQL it cost ~20 % of a
    2PC branch's CPU and buys the SDK nothing: every transaction it runs is retried when it
    meets a connection the server dropped (restart), and that failure makes SQLAlchemy
    replace every older pooled connection. On MySQL/MariaDB, whose idle pooled connections
    the SDK's session guard (``wait_timeout``) has the server close, a connection is pinged
    only when it sat idle, and rolled back on return only when it holds a transaction
    (``pool.tune_mysql_pool``). Pass ``pool_pre_ping=True`` for an engine your own code
    shares without such retries.
    """
    url = parse(dsn)
    mysql = url.get_backend_name() in ("mysql", "mariadb")
    options: dict[str, Any] = {"hide_parameters": True, **engine_options}
    if mysql:
        options = mysql_pool_options(options)
    engine = create_async_engine(url, **options)
    if mysql:
        tune_mysql_pool(engine, options)
    return engine


async def select_one(engine: AsyncEngine) -> None:
    """SELECT 1 on a pooled connection. One the server dropped is no sign of an unreachable
    database (the pool may not pre-ping): its failure replaced it, so ask once more."""
    for last in (False, True):
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return
        except DBAPIError as exc:
            if last or not exc.connection_invalidated:
                raise


async def check_connection(engine: AsyncEngine) -> None:
    """Connect once; :class:`DsnError` names the DSN (password hidden) when that fails."""
    try:
        await select_one(engine)
    except (SQLAlchemyError, OSError) as exc:
        raise DsnError(f"cannot connect to {mask(engine.url)}: {describe_connect(exc)}") from None


def describe_connect(exc: BaseException) -> str:
    # Connection errors carry no statement parameters, and their text (unknown database,
    # authentication failed, connection refused) is the useful part, so keep it.
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).splitlines()[0] if str(orig) else ""
    return first or describe(exc)
