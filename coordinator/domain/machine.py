"""What every protocol's state machine offers the driver (one module per protocol)."""

from __future__ import annotations

from typing import Protocol

from .events import Event
from .records import Call, Transition, TxRecord


class Machine(Protocol):
    def start(self, record: TxRecord, now: float) -> Transition:
        """First calls of a fresh record (persisted together with the record's creation)."""

    def apply(self, record: TxRecord, event: Event, now: float) -> Transition:
        """The next record and calls after an event."""

    def resume(self, record: TxRecord) -> Transition:
        """Calls to repeat for a record loaded from the log."""

    def wanted(self, record: TxRecord, call: Call) -> bool:
        """Whether an in-flight call still matters in the record's current state."""

    def deadline(self, record: TxRecord) -> float | None:
        """When to feed DeadlinePassed, if the current state has a deadline."""

    def retry_deadline(self, record: TxRecord, op: str, phase_budget_s: float) -> float:
        """The wall-clock time after which retries of ``op`` give up."""
