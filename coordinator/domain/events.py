"""Events the driver feeds to the state machines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """A participant gave a definite answer: ``ok`` (OUTCOME_OK) or a refusal (OUTCOME_FAILED)."""

    branch: str
    op: str
    ok: bool
    result: bytes = b""
    message: str = ""


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """One attempt ended without a definite answer (RETRY, transport error, timeout)."""

    branch: str
    op: str
    attempt: int
    error: str


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The retry budget ran out with no definite answer: the step may or may not have run."""

    branch: str
    op: str
    error: str


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    """The transaction's forward (saga) or prepare (2PC) deadline has passed."""


Event = Reply | AttemptFailed | GaveUp | DeadlinePassed
