"""Exponential backoff with jitter, as tenacity wait strategies."""

from __future__ import annotations

from tenacity import wait_exponential, wait_random
from tenacity.wait import wait_base


def backoff(initial: float, maximum: float) -> wait_base:
    """initial * 2**n seconds capped at ``maximum``, plus up to ``initial`` of jitter,
    so that twins that failed together do not retry in lockstep."""
    return wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial)
