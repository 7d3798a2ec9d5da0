"""Takeover: claim transactions whose owner's lease is gone, and drive them.

A scan runs at once when the log reports a coordinator's departure (its lease ended), and
every ``interval_s`` in any case (the guarantee: a missed departure only costs time).

The same scan also picks up transactions this coordinator owns in the log but does not
drive: a create whose reply was lost (etcd applied it, the request timed out) leaves one,
owned by a live lease, so no other coordinator would ever take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..log import LogError, TxLog
from ..telemetry._metrics import OFF, Metrics
from ._driver import Driver

log = logging.getLogger("txcoord.recovery")
UNATTENDED_EVERY = 10  # scans between looks for owned-but-undriven transactions


class Recovery:
    def __init__(self, txlog: TxLog, driver: Driver, interval_s: float, batch: int = 100,
                 metrics: Metrics = OFF) -> None:
        self._log = txlog
        self._metrics = metrics
        self._driver = driver
        self._interval_s = interval_s
        self._batch = batch
        self._tasks: list[asyncio.Task[None]] = []
        self._scans = 0
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(), name="txc-recovery"),
                       asyncio.create_task(self._listen(), name="txc-departures")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def scan_once(self) -> int:
        """Claim and adopt one batch of orphans; returns how many were claimed."""
        if not self._log.lease_alive():
            return 0
        epoch = self._log.lease_epoch
        claimed = await self._log.claim_orphans(self._batch)
        if claimed:
            self._metrics.takeovers(len(claimed))
        for stored in claimed:
            log.info("claimed orphan gid=%s state=%s", stored.record.gid, stored.record.state.name,
                     extra={"gid": stored.record.gid})
            self._driver.adopt(stored, epoch)
        if self._scans % UNATTENDED_EVERY == 0:  # rare, and it reads every owner key
            await self._adopt_unattended()
        self._scans += 1
        return len(claimed)

    async def _adopt_unattended(self) -> None:
        epoch = self._log.lease_epoch
        for gid in await self._log.mine():
            if self._driver.owns(gid):
                continue
            stored = await self._log.get(gid)
            # Finished since mine() was read (or parked FAILED): nothing to drive.
            if stored is None or stored.record.finished or self._driver.owns(gid):
                continue

            log.warning("driving gid=%s: owned here but not driven (a create whose reply was "
                        "lost?)", gid, extra={"gid": gid})
            self._driver.adopt(stored, epoch)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                while await self.scan_once() >= self._batch:
                    pass  # a full batch: there may be more right away
            except LogError as exc:
                log.warning("orphan scan failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)

    async def _listen(self) -> None:
        """Wake the scan when a coordinator departs; the watch is re-opened if it fails."""
        while True:
            try:
                async for owner in self._log.departures():
                    if owner != self._log.owner_id:
                        log.info("coordinator %s departed: scanning for its transactions", owner)
                        self._wake.set()
            except LogError as exc:
                log.warning("departure watch failed: %s", exc)
            except Exception as exc:
                log.warning("departure watch ended: %s", type(exc).__name__)
            await asyncio.sleep(1.0)
