"""Shutdown steps that cannot hold a process up for good.

A stop that waits on a peer (an etcd lease revoke, a channel close, a server draining
calls) must end even when the peer never answers or a task ignores its cancellation:
SIGTERM has to stop the process. Each step gets a bound; an overrun or a failure is
logged by name and the shutdown goes on with the next step (a lease still gets revoked
after the takeover scan failed to stop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("txcoord.shutdown")


async def bounded(step: Awaitable[object], seconds: float, what: str) -> bool:
    """Await ``step`` for at most ``seconds``; True when it finished cleanly. An overrunning
    step is cancelled but not waited for; a failing one is logged."""
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_log_late_failure(what))
        log.warning("shutdown: %s did not finish within %.1fs; going on without it", what, seconds)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("shutdown: %s failed; going on", what, exc_info=task.exception())
        return False
    return True


def _log_late_failure(what: str) -> Callable[[asyncio.Future[object]], None]:
    def read(task: asyncio.Future[object]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("shutdown: %s failed after it was left behind: %r", what, task.exception())
    return read
