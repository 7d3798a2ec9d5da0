"""The local-transaction contract every branch kind shares (the saga barrier and 2PC).

A business function gets a connection inside the SDK's transaction and returns result
bytes; raising :class:`Refused` is the business saying no (its writes roll back, the reply
is OUTCOME_FAILED). :class:`BarrierOptions` bound the retries of one local transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.participant._db.errors import ParticipantError
from coordinator.participant._db.tables import MESSAGE_CHARS
from coordinator.participant._types import Outcome, Reply

BusinessFn = Callable[[AsyncConnection], Awaitable[bytes | None]]
"""The service's business step: gets the barrier's connection (inside its transaction),
returns the result bytes for the reply. Must not commit or roll back itself."""


class Refused(ParticipantError):
    """A permanent business refusal (insufficient funds, unknown account...).

    Raise it from a handler: the business writes roll back and the reply is
    OUTCOME_FAILED with this message. Never retried by the coordinator.
    """


class PayloadError(Refused):
    """The request payload could not be decoded by the handler's decoder."""


@dataclass(frozen=True)
class BarrierOptions:
    """Options of every local transaction the SDK runs (saga barrier and 2PC alike)."""

    attempts: int = 3
    """Whole-transaction tries on transient database errors before answering RETRY."""

    initial_backoff_s: float = 0.01
    """Wait before the second try; doubles per try, with jitter."""

    max_backoff_s: float = 0.5
    """Cap of the wait between tries."""

    session_timeout_s: float = 30.0
    """Seconds of silence after which the database ends a session of the SDK's (PostgreSQL
    ``idle_in_transaction_session_timeout``, MySQL ``wait_timeout``), so that a connection
    lost mid-call cannot hold its row locks, or a prepared XID, for hours. Must exceed
    :attr:`HostOptions.call_timeout_s`."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.session_timeout_s <= 0:
            raise ValueError("session_timeout_s must be positive")


def refusal(exc: Refused) -> Reply:
    """The FAILED reply a :class:`Refused` stands for (its message fits the table's column)."""
    return Reply(Outcome.FAILED, message=(str(exc) or "refused")[:MESSAGE_CHARS])


def as_result(result: object, what: str = "a business function") -> bytes:
    """A business function's return value as the reply's result bytes."""
    if result is None:
        return b""
    if isinstance(result, bytes):
        return result
    raise TypeError(f"{what} must return bytes or None, not {type(result).__name__}")
