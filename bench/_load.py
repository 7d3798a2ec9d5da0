"""The closed load loop both benchmarks drive, and latency percentiles."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def closed_loop(items: Iterable[T], concurrency: int,
                      one: Callable[[T], Awaitable[R]]) -> tuple[float, list[float], list[R]]:
    """``concurrency`` workers run ``one`` over ``items``, each starting its next as soon as
    its last returns; (items per second, latency of each in seconds, each result)."""
    latencies: list[float] = []
    results: list[R] = []
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            t0 = time.perf_counter()
            results.append(await one(item))
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(results) / (time.perf_counter() - start), latencies, results


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (1..99) of ``values``."""
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]
