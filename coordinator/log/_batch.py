"""Group commit: callers submit one item each; items that arrive while a request is in
flight are sent together in the next one. No timer, so a lone write waits for nothing."""

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
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._key = key  # items with equal keys never share a batch (etcd rejects that)
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        # The loop keeps only weak references to tasks: without this one a drain task could
        # be collected mid-flight, leaving _running set and every later write waiting forever.
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._take()
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise  # cancelled: no waiter is left hanging, the next submit restarts
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        rest: list[tuple[T, asyncio.Future[R]]] = []
        seen: set[Hashable] = set()
        for entry in self._queue:
            key = self._key(entry[0])
            if len(batch) < self._max and key not in seen:
                seen.add(key)
                batch.append(entry)
            else:
                rest.append(entry)
        self._queue = rest
        return batch
