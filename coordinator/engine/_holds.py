"""The participant holds as this coordinator knows them, and the transactions waiting here.

Holds live in the log (every coordinator's, they outlive restarts); each coordinator reads
them every ``poll_s`` and at once after it changes one itself. When a hold goes away the
transactions waiting on it are resumed at ``resume_per_s``, not all at once: a participant
back from maintenance should not meet every call that queued up while it was away in the
same second. While the log cannot be read the last known holds stay in force (honouring a
released hold a little longer is harmless; calling a held participant is not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from ..domain.holds import Hold
from ..log import LogError, TxLog
from ..telemetry._metrics import OFF, Metrics

log = logging.getLogger("txcoord.engine")

Resume = Callable[[str, str, Hold | None], Awaitable[None]]
"""(address, gid, the hold as it was): resume one transaction waiting on ``address``."""


class HoldBook:
    def __init__(self, txlog: TxLog, poll_s: float = 1.0, resume_per_s: float = 50.0,
                 metrics: Metrics = OFF) -> None:
        if not poll_s > 0 or not resume_per_s > 0:
            raise ValueError("poll_s and resume_per_s must be positive")
        self._log = txlog
        self._poll_s = poll_s
        self._resume_gap_s = 1.0 / resume_per_s
        self._metrics = metrics
        self._holds: dict[str, Hold] = {}
        self._waiting: dict[str, set[str]] = {}  # address -> gids waiting here
        self._due: deque[tuple[str, str, Hold | None]] = deque()
        self._wake = asyncio.Event()
        self._resume: Resume | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def on_release(self, resume: Resume) -> None:
        self._resume = resume

    def held(self, address: str) -> Hold | None:
        return self._holds.get(address)

    def current(self) -> dict[str, Hold]:
        return dict(self._holds)

    def waiting(self, address: str | None = None) -> int:
        """Transactions waiting here on ``address`` (on any hold when None)."""
        if address is not None:
            return len(self._waiting.get(address, ()))
        return len(set().union(*self._waiting.values())) if self._waiting else 0

    def wait(self, address: str, gid: str) -> None:
        """``gid`` waits on ``address``; resumed when it is released (at once if it is not
        held now: it may have been released between the check and this call)."""
        if address in self._holds:
            self._waiting.setdefault(address, set()).add(gid)
        else:
            self._queue(address, gid, None)
        self._report()

    def start(self) -> None:
        """Read the holds every poll_s and resume waiters (stopped by ``stop``)."""
        self._tasks = [asyncio.create_task(self._poll(), name="txc-holds"),
                       asyncio.create_task(self._resumer(), name="txc-hold-resume")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def refresh(self) -> None:
        """Read the holds from the log now; raises LogError when it cannot."""
        self._apply({h.address: h for h in await self._log.holds()})

    def _apply(self, holds: dict[str, Hold]) -> None:
        for address in [a for a in self._holds if a not in holds]:
            gone = self._holds[address]
            for gid in sorted(self._waiting.pop(address, ())):
                self._queue(address, gid, gone)
            log.info("hold on %s released; %d transaction(s) here resume", address,
                     len(self._due), extra={"participant": address})
        self._holds = holds
        self._report()

    def _queue(self, address: str, gid: str, hold: Hold | None) -> None:
        self._due.append((address, gid, hold))
        self._wake.set()

    def _report(self) -> None:
        self._metrics.holds_now(len(self._holds), self.waiting())

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except LogError as exc:
                log.warning("could not read the participant holds (%s); the last known "
                            "ones stay in force", exc)
            await asyncio.sleep(self._poll_s)

    async def _resumer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._due:
                address, gid, hold = self._due.popleft()
                if self._resume is not None:
                    try:
                        await self._resume(address, gid, hold)
                    except Exception:  # one transaction's trouble must not stop the others
                        log.exception("gid=%s: resuming after the hold on %s failed", gid,
                                      address, extra={"gid": gid})
                await asyncio.sleep(self._resume_gap_s)
