"""Exponential backoff with jitter, as tenacity wait strategies."""

from __future__ import annotations

from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base


def backoff(initial: float, maximum: float) -> wait_base:
    """initial * 2**n seconds capped at ``maximum``, plus up to ``initial`` of jitter,
    so that twins that failed together do not retry in lockstep."""
    return wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial)


def retrying_on(retryable: Callable[[BaseException], bool], attempts: int, initial: float,
                maximum: float) -> AsyncRetrying:
    """Retry a local transaction on the errors ``retryable`` accepts, then re-raise."""
    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=backoff(initial, maximum),
        retry=retry_if_exception(retryable),
        reraise=True,
    )
