"""Group commit: callers submit one item each; items that arrive while a request is in
flight are sent together in the next one. Idle, an item goes at once (one turn of the
event loop later, so that items submitted in the same turn share the request).

One request is in flight at a time while requests are quick: that is what lets items
accumulate under load (a second request started at once would carry one item each,
and a loaded coordinator would send nearly one request per write). A request that has
been in flight for ``stall_s`` lets another start, up to ``max_in_flight``: a request stuck
on a slow or unreachable etcd member (the client spreads requests over the members) must
not hold up every other write for its whole timeout.

A batch is bounded by count and by bytes (etcd refuses a request over its limit, and a
refused batch would be retried, batched again and refused again): an item too big to
share a request goes alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        max_batch: int,
        key: Callable[[T], Hashable],
        max_in_flight: int = 4,
        size: Callable[[T], int] = lambda _: 0,
        max_bytes: int = 0,
        stall_s: float = 0.02,
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._size = size
        self._max_bytes = max_bytes  # 0 = no byte bound
        self._max_in_flight = max_in_flight
        self._stall_s = stall_s
        # Items with equal keys never share a batch (etcd rejects that) nor are in flight
        # together (their order would be up to the network).
        self._key = key
        self._busy: set[Hashable] = set()
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        # The loop keeps only weak references to tasks: without these a drain task could be
        # collected mid-flight, leaving its waiters hanging forever.
        self._drainers: set[asyncio.Task[None]] = set()
        self._stalled = 0  # drainers whose request has been in flight past stall_s
        self.requests = 0  # flushes made (how well items are grouped: items / requests)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if len(self._drainers) == self._stalled:  # none, or every one stuck
            self._start_drainer()
        return await future

    def _start_drainer(self) -> None:
        if len(self._drainers) >= self._max_in_flight:
            return
        drainer = asyncio.get_running_loop().create_task(self._drain())
        self._drainers.add(drainer)
        drainer.add_done_callback(self._drainers.discard)

    def _on_stall(self, fired: list[bool]) -> None:
        """A request is slow: let the items queued behind it go in a request of their own."""
        fired.append(True)
        self._stalled += 1
        if self._queue:
            self._start_drainer()

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # items submitted in this turn of the loop come along
        while batch := self._take():
            keys = {self._key(item) for item, _ in batch}
            self._busy |= keys
            self.requests += 1
            fired: list[bool] = []
            stall = asyncio.get_running_loop().call_later(self._stall_s, self._on_stall, fired)
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise  # cancelled: no waiter is left hanging, the next submit restarts
                continue
            finally:
                self._busy -= keys
                stall.cancel()
                self._stalled -= len(fired)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        # Leave the set in the same step that found nothing to take: a submit from now on
        # starts a drainer of its own (a done-callback would leave a gap where it does not).
        # Items left queued wait on a key in flight: its drainer takes them when it loops.
        self._drainers.discard(asyncio.current_task())

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        rest: list[tuple[T, asyncio.Future[R]]] = []
        seen: set[Hashable] = set()
        used = 0
        for entry in self._queue:
            key = self._key(entry[0])
            size = self._size(entry[0])
            fits = not batch or not self._max_bytes or used + size <= self._max_bytes
            if fits and len(batch) < self._max and key not in seen and key not in self._busy:
                seen.add(key)
                batch.append(entry)
                used += size
            else:
                rest.append(entry)
        self._queue = rest
        return batch
