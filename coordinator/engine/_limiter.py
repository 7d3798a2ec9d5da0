"""Bounded concurrency per participant, with work that finishes transactions first.

Without a bound, a participant that slows down gets every retry of every transaction at
once: its pool runs dry, every call passes its deadline, each timeout brings another
retry, and the participant never catches up even after the fault is gone. With a bound,
extra calls wait here, in this process, where waiting costs nothing.

Calls that release a participant's resources (commit, abort, compensate) go before calls
that take them (prepare, execute): a prepared branch holds its row locks until phase 2
reaches it, so phase 2 stuck behind new prepares would keep the locks those prepares wait for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..domain.records import Op

_FIRST = frozenset({Op.COMMIT, Op.ABORT, Op.COMPENSATE})


@dataclass
class _Gate:
    running: int = 0
    finishing: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    starting: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)

    def queued(self) -> int:
        return len(self.finishing) + len(self.starting)


class CallLimiter:
    """At most ``per_participant`` calls in flight to each participant address."""

    def __init__(self, per_participant: int) -> None:
        if per_participant < 1:
            raise ValueError("per_participant must be at least 1")
        self._limit = per_participant
        self._gates: dict[str, _Gate] = {}

    def in_flight(self, address: str) -> int:
        gate = self._gates.get(address)
        return gate.running if gate else 0

    def queued(self, address: str) -> int:
        gate = self._gates.get(address)
        return gate.queued() if gate else 0

    @contextlib.asynccontextmanager
    async def slot(self, address: str, op: str) -> AsyncIterator[None]:
        gate = self._gates.setdefault(address, _Gate())
        if gate.running >= self._limit or gate.queued():
            await self._wait(address, gate, op)
        else:
            gate.running += 1
        try:
            yield
        finally:
            self._release(address, gate)

    async def _wait(self, address: str, gate: _Gate, op: str) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = gate.finishing if op in _FIRST else gate.starting
        queue.append(waiter)
        try:
            await waiter  # _release counted us as running before waking us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(address, gate)  # woken and cancelled in one turn: pass it on
            elif waiter in queue:  # not yet passed over by a release (_wake skips it then)
                queue.remove(waiter)
            raise

    def _release(self, address: str, gate: _Gate) -> None:
        gate.running -= 1
        self._wake(gate)
        if gate.running == 0 and not gate.queued():
            self._gates.pop(address, None)

    def _wake(self, gate: _Gate) -> None:
        while gate.running < self._limit:
            queue = gate.finishing or gate.starting
            if not queue:
                return
            waiter = queue.popleft()
            if not waiter.done():
                gate.running += 1
                waiter.set_result(None)
