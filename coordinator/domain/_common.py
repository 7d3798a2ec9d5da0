"""Small record edits shared by the protocol state machines."""

from __future__ import annotations

from dataclasses import replace

from .records import BranchStatus, HistoryEntry, Transition, TxRecord, TxState

ACTOR = "coordinator"
MAX_HISTORY = 32  # entries kept, newest last: bounds what a record can grow to
MAX_ERROR_CHARS = 512  # of a participant's message kept in a record


def clip(text: str) -> str:
    """A participant's message as a record keeps it (bounded: the record must stay small)."""
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def erred(record: TxRecord, reason: str) -> TxRecord:
    """``record`` with ``reason`` as its error, and as its cause if it had none yet: an
    operator's replay or skip changes ``error``, never the first cause."""
    return replace(record, error=reason, cause=record.cause or reason)


def fail(record: TxRecord, branch: str, reason: str, now: float) -> Transition:
    status = record.status(branch)
    record = record.with_branch(branch, stamp(replace(status, error=reason), now))
    record = replace(erred(record, reason), state=TxState.FAILED)
    return Transition(touch(note(record, "failed", reason, now), now))


def note(record: TxRecord, action: str, reason: str, now: float, actor: str = ACTOR) -> TxRecord:
    entry = HistoryEntry(at=now, actor=actor, action=action, reason=reason)
    return replace(record, history=_bounded((*record.history, entry)))


def _bounded(history: tuple[HistoryEntry, ...]) -> tuple[HistoryEntry, ...]:
    """At most MAX_HISTORY entries, dropping the coordinator's own oldest first: every
    operator step stays on record (the audit), while the coordinator's entries are the
    ones that repeat (a failure after each replay) and ``cause`` keeps the first error."""
    while len(history) > MAX_HISTORY:
        oldest = next((i for i, h in enumerate(history) if h.actor == ACTOR), 0)
        history = history[:oldest] + history[oldest + 1:]
    return history


def counted(status: BranchStatus, attempts: int) -> BranchStatus:
    """``status`` with the attempt count an event reports (never lowered)."""
    return replace(status, attempts=max(status.attempts, attempts))


def stamp(status: BranchStatus, now: float) -> BranchStatus:
    return replace(status, updated_at=now)


def touch(record: TxRecord, now: float) -> TxRecord:
    return replace(record, updated_at=now)
