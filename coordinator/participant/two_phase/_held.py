"""MySQL/MariaDB: preparing sessions kept open until phase 2, a bounded number at a time.

Another session may finish a prepared XA transaction only once the session that prepared
it is gone, and MariaDB 10.11 can lose an ``XA COMMIT`` that races with the end of that
session (see ``_xa.wait_session_gone``). The session that prepared an XID may always
finish it itself, so a prepare keeps its connection here and phase 2 commits or rolls
back on it: no session ends in between, so there is no race and nothing to wait for.

A kept connection stays checked out of the pool, so at most ``limit`` are kept (past it
a prepare closes its connection and waits for the session to end, as without keeping),
and each is given back after ``hold_s`` (before the server's idle timeout would end the
session behind our back): ``release`` closes it and waits until the session is gone,
after which any session may finish the XID. The recovery loop and phase 2 for an XID
whose session was released, lost or never kept take that path too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger("coordinator.participant.two_phase")


@dataclass
class Held:
    conn: AsyncConnection
    session: int  # the server's id of the connection's session
    expiry: asyncio.TimerHandle | None = None


Release = Callable[[str, Held], Awaitable[None]]


class HeldSessions:
    def __init__(self, limit: int, hold_s: float, release: Release) -> None:
        self._limit = limit
        self._hold_s = hold_s
        self._release = release
        self._held: dict[str, Held] = {}
        self._releasing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._held)

    def has_room(self) -> bool:
        return len(self._held) < self._limit

    def keep(self, xid: str, conn: AsyncConnection, session: int) -> None:
        held = Held(conn, session)
        # A timer, not a task per branch: most kept sessions are taken by phase 2 long before.
        held.expiry = asyncio.get_running_loop().call_later(self._hold_s, self._expire, xid)
        self._held[xid] = held

    def take(self, xid: str) -> Held | None:
        """The kept session of ``xid``, now the caller's (None if not kept here)."""
        held = self._held.pop(xid, None)
        if held is not None and held.expiry is not None:
            held.expiry.cancel()
        return held

    async def release_all(self) -> None:
        """Give every kept session back (host stop); each XID is then finished from any
        session once its preparing session is gone."""
        for xid in list(self._held):
            held = self.take(xid)
            if held is not None:
                await self._release(xid, held)
        if self._releasing:
            await asyncio.wait(set(self._releasing))

    def _expire(self, xid: str) -> None:
        held = self.take(xid)
        if held is not None:
            task = asyncio.create_task(self._release_logged(xid, held), name=f"txc-2pc-release-{xid}")
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _release_logged(self, xid: str, held: Held) -> None:
        try:
            await self._release(xid, held)
        except Exception as exc:  # the XID stays recorded as detaching; phase 2 waits for it
            log.warning("2PC: releasing the session of %s failed: %s", xid, type(exc).__name__)
