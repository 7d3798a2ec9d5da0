"""Events the driver feeds to the state machines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Answered:
    """A participant gave a definite answer: ``ok`` (OUTCOME_OK) or a refusal (OUTCOME_FAILED)."""

    branch: str
    op: str
    ok: bool
    result: bytes = b""
    message: str = ""
    attempts: int = 0  # calls made of this operation, this one included
    null_compensation: bool = False  # an OK compensation: the action never ran there


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
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Misconfigured:
    """The participant cannot perform the operation: it does not implement the method
    (``may_have_run=False``) or answered without an outcome (``True``: it may have applied
    it). Retrying cannot help; an operator must fix the participant."""

    branch: str
    op: str
    error: str
    may_have_run: bool
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    """The transaction's forward (saga) or prepare (2PC) deadline has passed."""


Event = Answered | AttemptFailed | GaveUp | Misconfigured | DeadlinePassed
