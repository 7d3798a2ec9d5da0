"""Retry schedules for participant calls (tenacity): exponential backoff with jitter,
bounded by the branch's attempt budget and by an absolute deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_exponential_jitter

from ..domain.records import RetryPolicy
from ._dispatch import Answer, Kind


class stop_at_deadline(stop_base):
    """Stop when the next sleep would end past ``deadline`` (a wall-clock time)."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self._deadline = deadline
        self._clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._clock() + (retry_state.upcoming_sleep or 0.0) >= self._deadline


def retrying(
    policy: RetryPolicy,
    deadline: float,
    clock: Callable[[], float],
    before_sleep: Callable[[RetryCallState], Awaitable[None]],
) -> AsyncRetrying:
    stop: stop_base = stop_at_deadline(deadline, clock)
    if policy.max_attempts:
        stop = stop | stop_after_attempt(policy.max_attempts)
    return AsyncRetrying(
        stop=stop,
        wait=wait_exponential_jitter(
            multiplier=policy.initial_backoff_s,
            max=policy.max_backoff_s,
            exp_base=policy.multiplier,
            jitter=policy.initial_backoff_s,
        ),
        retry=retry_if_result(_unknown),
        before_sleep=before_sleep,
        retry_error_callback=_last_answer,
    )


async def retried(
    first: Answer,
    again: Callable[[], Awaitable[Answer]],
    policy: RetryPolicy,
    deadline: float,
    clock: Callable[[], float],
    before_sleep: Callable[[RetryCallState], Awaitable[None]],
) -> Answer:
    """``first`` when it is definite; else ``again`` on the policy's schedule, ``first``
    counting as its first try (the schedule is built only when needed)."""
    if first.kind is not Kind.UNKNOWN:
        return first
    pending = [first]

    async def replay_first_then_attempt() -> Answer:
        return pending.pop() if pending else await again()

    return await retrying(policy, deadline, clock, before_sleep)(replay_first_then_attempt)


def _unknown(answer: Answer) -> bool:
    return answer.kind is Kind.UNKNOWN


def _last_answer(retry_state: RetryCallState) -> Answer:
    assert retry_state.outcome is not None
    result: Answer = retry_state.outcome.result()
    return result
