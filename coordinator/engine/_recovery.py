"""Takeover: periodically claim transactions whose owner's lease is gone, and drive them."""

from __future__ import annotations

import asyncio
import logging

from ..log import LogError, TxLog
from ._driver import Driver

log = logging.getLogger("txcoord.recovery")


class Recovery:
    def __init__(self, txlog: TxLog, driver: Driver, interval_s: float, batch: int = 100) -> None:
        self._log = txlog
        self._driver = driver
        self._interval_s = interval_s
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="txc-recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def scan_once(self) -> int:
        """Claim and adopt one batch of orphans; returns how many were claimed."""
        if not self._log.lease_alive():
            return 0
        claimed = await self._log.claim_orphans(self._batch)
        for stored in claimed:
            log.info("claimed orphan gid=%s state=%s", stored.record.gid, stored.record.state.name)
            self._driver.adopt(stored)
        return len(claimed)

    async def _loop(self) -> None:
        while True:
            try:
                while await self.scan_once() >= self._batch:
                    pass  # a full batch: there may be more right away
            except LogError as exc:
                log.warning("orphan scan failed: %s", exc)
            await asyncio.sleep(self._interval_s)
