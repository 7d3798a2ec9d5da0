"""Shutdown steps that cannot hold a process up for good.

A stop that waits on a peer (an etcd lease revoke, a channel close, a server draining
calls) must end even when the peer never answers or a task ignores its cancellation:
SIGTERM has to stop the process. Each step gets a bound; an overrun is logged by name
and the shutdown goes on with the next step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

log = logging.getLogger("txcoord.shutdown")


async def bounded(step: Awaitable[object], seconds: float, what: str) -> bool:
    """Await ``step`` for at most ``seconds``; False (and a warning) when it overran. The
    overrunning step is cancelled but not waited for."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        task.result()  # a step that failed fails the shutdown, as it would unbounded
        return True
    task.cancel()
    log.warning("shutdown: %s did not finish within %.1fs; going on without it", what, seconds)
    return False
