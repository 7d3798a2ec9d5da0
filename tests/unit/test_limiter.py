"""CallLimiter: a bound per participant, finishing work (commit/abort/compensate) first."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.domain.records import Op
from coordinator.engine._limiter import CallLimiter


async def _hold(limiter: CallLimiter, address: str, op: str, order: list[str],
                release: asyncio.Event) -> None:
    async with limiter.slot(address, op):
        order.append(op)
        await release.wait()


async def test_bound_per_participant_and_phase_two_before_new_prepares() -> None:
    limiter, order, release = CallLimiter(2), [], asyncio.Event()
    holders = [asyncio.create_task(_hold(limiter, "p:1", Op.PREPARE, order, release))
               for _ in range(2)]
    other = asyncio.create_task(_hold(limiter, "q:1", Op.PREPARE, [], release))
    await asyncio.sleep(0)
    assert limiter.in_flight("p:1") == 2 and limiter.in_flight("q:1") == 1  # separate bounds
    queued = [asyncio.create_task(_hold(limiter, "p:1", op, order, release))
              for op in (Op.PREPARE, Op.EXECUTE, Op.ABORT, Op.COMMIT, Op.COMPENSATE)]
    await asyncio.sleep(0)
    assert limiter.queued("p:1") == 5 and order == [Op.PREPARE, Op.PREPARE]
    release.set()
    await asyncio.gather(*holders, *queued, other)
    assert order[2:] == [Op.ABORT, Op.COMMIT, Op.COMPENSATE, Op.PREPARE, Op.EXECUTE]
    assert limiter.in_flight("p:1") == 0 and limiter.queued("p:1") == 0


async def test_a_cancelled_waiter_neither_leaks_nor_steals_a_slot() -> None:
    limiter, order, release = CallLimiter(1), [], asyncio.Event()
    holder = asyncio.create_task(_hold(limiter, "p:1", Op.PREPARE, order, release))
    await asyncio.sleep(0)
    gone = asyncio.create_task(_hold(limiter, "p:1", Op.COMMIT, order, release))
    later = asyncio.create_task(_hold(limiter, "p:1", Op.PREPARE, order, release))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await asyncio.gather(holder, later)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert order == [Op.PREPARE, Op.PREPARE]
    assert limiter.in_flight("p:1") == 0


async def test_woken_then_cancelled_passes_its_slot_on() -> None:
    limiter, order, release = CallLimiter(1), [], asyncio.Event()
    woken: asyncio.Task[None] | None = None

    async def holder() -> None:
        async with limiter.slot("p:1", Op.PREPARE):
            await release.wait()
        assert woken is not None
        woken.cancel()  # in the very turn the release woke it, before it could run

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    woken = asyncio.create_task(_hold(limiter, "p:1", Op.ABORT, order, asyncio.Event()))
    next_ = asyncio.create_task(_hold(limiter, "p:1", Op.PREPARE, order, release))
    await asyncio.sleep(0)
    release.set()
    await first
    await asyncio.wait_for(next_, 1.0)
    assert order == [Op.PREPARE] and limiter.in_flight("p:1") == 0
    assert woken.cancelled()


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="per_participant"):
        CallLimiter(0)


async def test_a_waiter_cancelled_just_before_its_turn_leaves_with_the_cancellation() -> None:
    """Cancelled, then passed over by a release in the same turn of the loop: it must leave
    as cancelled (it once raised ValueError from removing itself a second time)."""
    limiter = CallLimiter(1)

    async def waiting() -> None:
        async with limiter.slot("p:1", "execute"):
            raise AssertionError("never gets the slot")

    async with limiter.slot("p:1", "execute"):
        waiter = asyncio.create_task(waiting())
        await asyncio.sleep(0)  # queued behind us
        assert limiter.queued("p:1") == 1
        waiter.cancel()  # cancels its future now; its handler runs after our release
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (limiter.in_flight("p:1"), limiter.queued("p:1")) == (0, 0)
