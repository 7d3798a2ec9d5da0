"""Shutdown steps are bounded even when a step ignores its cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.rpc._shutdown import bounded


async def test_a_step_that_finishes_in_time_counts_as_done() -> None:
    assert await bounded(asyncio.sleep(0.01), 1.0, "quick") is True


async def test_a_step_that_never_ends_is_left_behind_at_its_bound(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():  # swallows cancellation, as a wedged client call can
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    started = time.monotonic()
    assert await bounded(stubborn(), 0.2, "lease revoke") is False
    assert time.monotonic() - started < 1.0
    assert "lease revoke did not finish within 0.2s" in caplog.text
    release.set()


async def test_a_step_that_fails_is_logged_and_the_shutdown_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("channel close failed")

    assert await bounded(broken(), 1.0, "channels") is False
    assert "channels failed" in caplog.text


async def test_a_cancelled_shutdown_cancels_its_step() -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        finally:
            stopped.set()

    outer = asyncio.ensure_future(bounded(slow(), 5.0, "slow"))
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.wait_for(stopped.wait(), 1.0)
