"""Holds on participants and pauses of transactions: the rules, as pure functions.

An operator *holds* a participant address (it is down for maintenance, say): no
coordinator sends it a new call until the hold is released. A transaction with a call
due there *waits on the hold* instead of spending its retry budget and its deadline. An
operator may also *pause* one transaction: nothing new is sent for it until it resumes.

Both freeze the transaction's clock. ``frozen_since`` says since when; when the last
reason to wait goes away the deadline (and the start of the current phase, which bounds
compensations and 2PC phase 2) moves forward by the time spent frozen, so a hold or a
pause never turns into a timeout. The frozen time is kept in the record, not in the
coordinator's memory, so a restart or a takeover does not lose it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ._common import note, touch
from .addresses import valid_address
from .errors import FailedPrecondition, InvalidArgument
from .records import BranchState, HistoryEntry, Protocol, Transition, TxRecord
from .validation import Limits, check_reason

MAX_HOLDS = 64
"""Held addresses at once, cluster-wide: each coordinator reads them all every poll."""

MAX_ACTOR_CHARS = 128

_ACTOR_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Hold:
    """A participant address no coordinator calls until it is released."""

    address: str
    actor: str
    reason: str
    since: float
    refuse_starts: bool = False  # True: new starts naming it are refused (UNAVAILABLE)


def check_hold(address: str, reason: str, limits: Limits, field: str = "address") -> None:
    """INVALID_ARGUMENT naming the field for an address or reason a hold cannot take."""
    if not valid_address(address):
        raise InvalidArgument(field, f"{address[:80]!r} is not HOST:PORT")
    check_reason(reason, limits)


def new_hold(address: str, actor: str, reason: str, now: float, refuse_starts: bool,
             current: dict[str, Hold]) -> Hold:
    """The hold to store; refuses one over MAX_HOLDS. Holding a held address again keeps
    its first ``since`` (the time held is counted from then) and takes the new reason."""
    existing = current.get(address)
    if existing is None and len(current) >= MAX_HOLDS:
        raise FailedPrecondition(f"{len(current)} addresses are held, the most there may be "
                                 f"({MAX_HOLDS}); release one first")
    since = existing.since if existing else now
    return Hold(address, _ACTOR_UNSAFE.sub(" ", actor)[:MAX_ACTOR_CHARS], reason, since,
                refuse_starts)


def blocking_start(addresses: list[str], holds: dict[str, Hold]) -> Hold | None:
    """The first hold among ``addresses`` that refuses new starts, if any."""
    for address in addresses:
        hold = holds.get(address)
        if hold is not None and hold.refuse_starts:
            return hold
    return None


def frozen(record: TxRecord) -> bool:
    """Its deadline does not run: it waits on a hold or is paused."""
    return record.frozen_since > 0


def wait_on(record: TxRecord, address: str, now: float) -> TxRecord:
    """``record`` waiting on the hold of ``address`` (its clock frozen from now)."""
    if address in record.waiting_on or record.state.settled:
        return record
    waiting = tuple(sorted((*record.waiting_on, address)))
    since = record.frozen_since or now
    return touch(replace(record, waiting_on=waiting, frozen_since=since), now)


def released(record: TxRecord, address: str, hold: Hold | None, now: float) -> TxRecord:
    """``record`` no longer waiting on ``address``; its clock runs again (deadline moved)
    unless it still waits on another hold or is paused. ``hold``: the hold as it was,
    named in the history."""
    if address not in record.waiting_on:
        return record
    waiting = tuple(a for a in record.waiting_on if a != address)
    record = replace(record, waiting_on=waiting)
    held_s = now - record.frozen_since if record.frozen_since else 0.0
    why = f"{address} held {held_s:.1f} s" + (f" ({hold.reason[:200]})" if hold else "")
    record = note(record, "hold released", why, now)
    return touch(_thawed(record, now), now)


def pause(record: TxRecord, actor: str, reason: str, now: float) -> Transition:
    """Stop driving it after the calls in flight; its clock stops."""
    if record.state.settled:
        raise FailedPrecondition(f"transaction {record.gid!r} is {record.state.name}: "
                                 "only a transaction that is still moving can be paused")
    if record.paused is not None:
        raise FailedPrecondition(f"transaction {record.gid!r} is paused already (by "
                                 f"{record.paused.actor}: {record.paused.reason})")
    entry = HistoryEntry(now, actor, "pause", reason)
    record = replace(record, paused=entry, frozen_since=record.frozen_since or now)
    return Transition(touch(note(record, "pause", reason, now, actor), now))


def resume(record: TxRecord, actor: str, reason: str, now: float) -> TxRecord:
    """Drive it again; its deadline moves by the time it stood still. The caller sends the
    calls its state machine's ``resume`` gives."""
    if record.paused is None:
        raise FailedPrecondition(f"transaction {record.gid!r} is not paused")
    record = note(replace(record, paused=None), "resume", reason, now, actor)
    return touch(_thawed(record, now), now)


def may_pause(record: TxRecord) -> bool:
    return not record.state.settled and record.paused is None


def prepared_while_paused(record: TxRecord) -> int:
    """Prepared 2PC branches of a paused transaction: their participants hold locks."""
    if record.paused is None or record.protocol is not Protocol.TWO_PHASE:
        return 0
    return sum(1 for s in record.branches if s.state is BranchState.PREPARED)


def _thawed(record: TxRecord, now: float) -> TxRecord:
    """The clock runs again if nothing holds it: deadline and phase start move forward."""
    if record.waiting_on or record.paused is not None or not record.frozen_since:
        return record
    moved = max(0.0, now - record.frozen_since)
    return replace(record, frozen_since=0.0, deadline=record.deadline + moved,
                   phase_started_at=record.phase_started_at + moved,
                   deadline_moved_s=record.deadline_moved_s + moved)
