"""Group commit: callers submit one item each; items that arrive while requests are in
flight are sent together in the next one. No timer, so a lone write waits for nothing.

Up to ``max_in_flight`` requests run at once: a request stuck on a slow or unreachable etcd
member (the client spreads requests over the members) must not hold up every other write
for its whole timeout, and pipelined requests keep the log busy while one is on the wire.

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
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._size = size
        self._max_bytes = max_bytes  # 0 = no byte bound
        self._max_in_flight = max_in_flight
        # Items with equal keys never share a batch (etcd rejects that) nor are in flight
        # together (their order would be up to the network).
        self._key = key
        self._busy: set[Hashable] = set()
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        # The loop keeps only weak references to tasks: without these a drain task could be
        # collected mid-flight, leaving its waiters hanging forever.
        self._drainers: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if len(self._drainers) < self._max_in_flight:
            drainer = asyncio.get_running_loop().create_task(self._drain())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        return await future

    async def _drain(self) -> None:
        while batch := self._take():
            keys = {self._key(item) for item, _ in batch}
            self._busy |= keys
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
