"""MySQL/MariaDB: sessions the 2PC code keeps out of the pool, a bounded number at a time.

**Held sessions.** Another session may finish a prepared XA transaction only once the
session that prepared it is gone, and MariaDB 10.11 can lose an ``XA COMMIT`` that races
with the end of that session (see ``_xa.wait_session_gone``). The session that prepared an
XID may always finish it itself, so a prepare keeps its connection here and phase 2 commits
or rolls back on it: no session ends in between, so there is no race and nothing to wait
for.

**Spare sessions.** Once phase 2 has finished its XID on a held session, the session is
kept for the next branch instead of going back to the pool: it already carries the
branch settings (session guard, lock wait), which would otherwise be set for every branch
and reset before every return to the pool (two round trips, and the pool's own work).

Both stay checked out of the pool, so together there are at most ``limit`` (past it a
prepare closes its connection and waits for the session to end, as without keeping). A
held one is given back after ``hold_s`` (before the server's idle timeout would end the
session behind our back) through ``release``, which closes it and waits until the session
is gone, after which any session may finish the XID; a spare one after
:data:`SPARE_IDLE_S` unused, through ``retire``, which resets it and returns it to the
pool. The recovery loop and phase 2 for an XID whose session was released, lost or never
kept take the waiting path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger("coordinator.participant.two_phase")

SPARE_IDLE_S = 1.0
"""A spare session unused for this long goes back to the pool: spares are for a steady
stream of branches, not to hold connections out of the pool while the service is idle."""


@dataclass(eq=False)  # one kept session each: compared by identity
class Held:
    conn: AsyncConnection
    session: int  # the server's id of the connection's session
    expiry: asyncio.TimerHandle | None = None


Release = Callable[[str, Held], Awaitable[None]]
Retire = Callable[[AsyncConnection], Awaitable[None]]


class HeldSessions:
    def __init__(self, limit: int, hold_s: float, release: Release, retire: Retire) -> None:
        self._limit = limit
        self._hold_s = hold_s
        self._release = release
        self._retire = retire
        self._held: dict[str, Held] = {}
        self._spare: list[Held] = []  # most recently parked last
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._held)

    @property
    def spares(self) -> int:
        return len(self._spare)

    def has_room(self) -> bool:
        return len(self._held) + len(self._spare) < self._limit

    def keep(self, xid: str, conn: AsyncConnection, session: int) -> None:
        """Keep ``conn``, which prepared ``xid``, for phase 2 (the caller checked has_room,
        or took the connection from :meth:`borrow`)."""
        held = Held(conn, session)
        # A timer, not a task per branch: most kept sessions are taken by phase 2 long before.
        held.expiry = asyncio.get_running_loop().call_later(self._hold_s, self._expire, xid)
        self._held[xid] = held

    def take(self, xid: str) -> Held | None:
        """The kept session of ``xid``, now the caller's (None if not kept here)."""
        held = self._held.pop(xid, None)
        if held is not None:
            _cancel(held)
        return held

    def park(self, conn: AsyncConnection, session: int) -> bool:
        """Keep a session with no XID of its own for the next branch; False when there is
        no room (the caller gives it back to the pool)."""
        if not self.has_room():
            return False
        held = Held(conn, session)
        idle_s = min(self._hold_s, SPARE_IDLE_S)
        held.expiry = asyncio.get_running_loop().call_later(idle_s, self._expire_spare, held)
        self._spare.append(held)
        return True

    def borrow(self) -> Held | None:
        """A spare session, now the caller's (None if there is none)."""
        if not self._spare:
            return None
        held = self._spare.pop()
        _cancel(held)
        return held

    async def release_all(self) -> None:
        """Give every kept session back (host stop); each XID is then finished from any
        session once its preparing session is gone."""
        for xid in list(self._held):
            held = self.take(xid)
            if held is not None:
                await self._release(xid, held)
        while (spare := self.borrow()) is not None:
            await self._retire(spare.conn)
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def _expire(self, xid: str) -> None:
        held = self.take(xid)
        if held is not None:
            self._spawn(self._logged(self._release(xid, held), xid), f"txc-2pc-release-{xid}")

    def _expire_spare(self, held: Held) -> None:
        if held in self._spare:
            self._spare.remove(held)
            self._spawn(self._logged(self._retire(held.conn), "a spare session"), "txc-2pc-retire")

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(work: Awaitable[None], what: str) -> None:
        try:
            await work
        except Exception as exc:  # a held XID stays recorded as detaching; phase 2 waits for it
            log.warning("2PC: giving back the session of %s failed: %s", what, type(exc).__name__)


def _cancel(held: Held) -> None:
    if held.expiry is not None:
        held.expiry.cancel()
        held.expiry = None
