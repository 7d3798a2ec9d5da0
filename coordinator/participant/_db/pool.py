"""Pool settings of the SDK's engines: no round trip a checkout or a checkin does not need.

SQLAlchemy's defaults cost a MySQL/MariaDB connection two round trips per use on top of
its own statements: ``pool_pre_ping`` pings on every checkout, and the pool's
reset-on-return sends ``ROLLBACK`` on every checkin, even right after a ``COMMIT``
(aiomysql sends it whatever the session's state). A 2PC branch checks connections out
three or four times, so those were a third of its round trips. Instead:

* **Ping only a connection that sat idle.** The session guard (``session.py``) has MySQL
  end a session after ``wait_timeout`` of silence, idle pooled connections included, so a
  connection that waited in the pool for a while may be gone. One that was used less than
  :data:`IDLE_PING_S` ago is handed out as it is; an older one is pinged first, and if
  the ping fails, every connection pooled before it is replaced, as ``pool_pre_ping``
  does. A connection that dies in between fails its statement, which the SDK retries.
* **Roll back on return only what is open.** The driver tracks the server's "in
  transaction" flag from every reply; a connection is rolled back on return only when the
  flag is set (a transaction left open, an XA branch left behind: the rollback then
  fails and the pool discards the connection).

PostgreSQL's driver already skips both (no pre-ping is configured, see ``dsn.create_engine``;
asyncpg's rollback sends nothing outside a transaction), so these apply to MySQL only.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, PoolResetState

IDLE_PING_S = 1.0
"""A pooled MySQL connection unused for longer than this is pinged before it is handed out."""

_RETURNED = "txc_returned_at"  # key in a connection record's info: when it was checked in


def mysql_pool_options(engine_options: dict[str, Any]) -> dict[str, Any]:
    """Pool options for a MySQL/MariaDB engine, unless the caller set them: no ping on
    every checkout and no unconditional rollback on return (see :func:`tune_mysql_pool`)."""
    return {"pool_pre_ping": False, "pool_reset_on_return": None} | engine_options


def tune_mysql_pool(engine: AsyncEngine, options: dict[str, Any]) -> None:
    """Ping idle connections on checkout and roll back open ones on return, for an engine
    made with ``options`` from :func:`mysql_pool_options`: each only where the caller did
    not choose otherwise (``pool_pre_ping=True`` pings every checkout itself; a
    ``pool_reset_on_return`` of the caller's is the pool's to apply)."""
    pool = engine.sync_engine.pool
    if not options.get("pool_pre_ping"):
        event.listen(pool, "checkin", _note_return)
        event.listen(pool, "checkout", _ping_if_idle(engine))
    if options.get("pool_reset_on_return") is None:
        event.listen(pool, "reset", _rollback_if_open)


def _note_return(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_RETURNED] = time.monotonic()


def _ping_if_idle(engine: AsyncEngine) -> Any:
    dialect = engine.sync_engine.dialect

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry,
                 proxy: PoolProxiedConnection) -> None:
        returned = record.info.get(_RETURNED)
        if returned is None or time.monotonic() - returned <= IDLE_PING_S:
            return  # fresh from connect, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # Like pool_pre_ping: the server dropped it (wait_timeout, a restart), so it
            # probably dropped every connection that waited as long: replace them all.
            raise sa_exc.InvalidatePoolError(f"idle connection failed its ping: {exc}") from exc

    return checkout


def _rollback_if_open(dbapi_connection: Any, record: ConnectionPoolEntry,
                      state: PoolResetState) -> None:
    if state.terminate_only or not state.asyncio_safe or state.transaction_was_reset:
        return  # being discarded, or the Connection already ended its transaction
    driver = record.driver_connection
    if driver is not None and driver.get_transaction_status():
        dbapi_connection.rollback()
