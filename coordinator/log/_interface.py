"""The one storage interface the engine sees.

Every transition is a compare-and-swap on the record's revision *and* on the caller still
owning the transaction, so two coordinators can never both move one transaction.
An implementation may send the writes of several transactions that are ready at the same
time in one request (group commit); each still succeeds or fails on its own.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ..domain.holds import Hold
from ..domain.records import TxRecord


@dataclass(frozen=True, slots=True)
class Stored:
    """A record as the log holds it; ``revision`` is the compare-and-swap token."""

    record: TxRecord
    revision: int


class LogError(Exception):
    """The store could not be reached or answered with an error; safe to retry."""


class RequestTooLarge(LogError):
    """The store refused the request for its size: retrying the same write cannot help."""


class LostOwnership(Exception):
    """This coordinator no longer owns the transaction (its lease ended, or another took it)."""

    def __init__(self, gid: str, current: Stored | None = None) -> None:
        super().__init__(f"transaction {gid} is no longer owned by this coordinator")
        self.gid = gid
        self.current = current


@dataclass(frozen=True, slots=True)
class Created:
    stored: Stored
    created: bool  # False: the gid existed, ``stored`` is the existing record


class TxLog(Protocol):
    """Durable, shared transaction log (etcd in production, memory in unit tests)."""

    @property
    def owner_id(self) -> str: ...

    async def open(self) -> None:
        """Connect and take a lease that binds this coordinator's ownership keys."""

    async def close(self, *, release: bool = True) -> None:
        """Disconnect; ``release`` revokes the lease so others take over at once."""

    lease_epoch: int
    """How many leases this coordinator has taken. Everything owned under one lease is
    lost with it: work started under an earlier epoch must never act again."""

    def lease_alive(self) -> bool:
        """False once the lease has expired: owned transactions are then orphans."""

    def reachable(self) -> bool:
        """The lease is alive and the store answers now: false as soon as this process is
        cut from the store, before the lease runs out (new work should go elsewhere)."""

    async def create(self, record: TxRecord) -> Created:
        """Store a new record owned by this coordinator, unless the gid exists."""

    async def write(self, prev: Stored, new: TxRecord) -> Stored:
        """CAS ``prev`` -> ``new``; raises LostOwnership or LogError. A finished record (terminal
        or FAILED, with no notice pending) gives up ownership: FAILED ones wait, unowned, for
        an operator. A settled one whose notice is pending stays owned (and an orphan when
        its owner dies), so that the notice is delivered by whoever owns it next."""

    async def get(self, gid: str) -> Stored | None: ...

    def value_bytes(self, record: TxRecord) -> tuple[int, int]:
        """What ``record`` weighs in the store: its state, and its payloads."""

    @property
    def max_request_bytes(self) -> int:
        """The most one write of one record may carry (the store refuses more)."""

    async def scan(self, *, start_after: str = "", limit: int = 100, prefix: str = "") -> list[Stored]:
        """Records in gid order, after ``start_after``, whose gid starts with ``prefix``; for
        listing only: their payloads may be left out (nothing may drive them)."""

    async def claim(self, stored: Stored) -> Stored:
        """Take ownership of one transaction as it stands (operator actions); raises
        LostOwnership when the record changed since ``stored`` was read."""

    async def claim_orphans(self, limit: int = 100) -> list[Stored]:
        """Take ownership of unfinished transactions whose owner is gone."""

    async def mine(self) -> list[str]:
        """Gids of the unfinished transactions this coordinator owns in the log."""

    async def count_failed(self) -> int:
        """How many transactions are FAILED (every coordinator's): the operators' queue."""

    def departures(self) -> AsyncIterator[str]:
        """Ids of coordinators whose lease ended, as it happens (a hint to scan for
        orphans now; the periodic scan stays the guarantee)."""

    def watch(self, gid: str) -> AsyncGenerator[Stored | None, None]:

        """The current record, then every change (payloads may be left out); None when it
        is removed."""

    async def holds(self) -> list[Hold]:
        """Every participant hold in force, cluster-wide (domain.holds)."""

    async def put_hold(self, hold: Hold) -> None:
        """Store ``hold`` (replacing one on the same address); it outlives this process."""

    async def delete_hold(self, address: str) -> Hold | None:
        """Remove the hold on ``address``; the hold it was, or None if there was none."""
