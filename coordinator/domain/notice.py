"""The notice of a settlement: pure rules, the driver delivers.

A start may name a notify target. Each time the transaction *settles* (reaches a terminal
state, or FAILED) the notice is armed in the very write that records the settlement, so
the intention is in the log before anything else happens and whichever coordinator owns
the transaction next delivers it (at least once; the receiver's barrier makes it once).

One notice per settlement: an operator's replay of a FAILED transaction that later
settles again arms a new generation, keyed ``{gid}/notify/2`` and so on, since a receiver
told "FAILED" must also learn how it really ended. A notice still pending when an
operator resumes a FAILED transaction is superseded (the settlement it reported is no
longer true; the next settlement has its own notice).
"""

from __future__ import annotations

from dataclasses import replace

from ._common import clip, note
from .records import BranchPlan, NoticeState, NoticeStatus, TxRecord

NOTICE_BRANCH = "/notify"


def branch_of(generation: int) -> str:
    """The BranchRequest.branch of a notice: ``/notify``, then ``/notify/2``, ..."""
    return NOTICE_BRANCH if generation <= 1 else f"{NOTICE_BRANCH}/{generation}"


def pending(record: TxRecord) -> bool:
    return record.notify is not None and record.notice.state is NoticeState.PENDING


def arm(before: TxRecord, after: TxRecord, now: float) -> TxRecord:
    """``after`` with its notice armed when the transition ``before`` -> ``after`` settles
    the transaction (or superseded when it resumes a settled one); else ``after`` itself."""
    if after.notify is None:
        return after
    if after.state.settled and after.state is not before.state:
        notice = NoticeStatus(NoticeState.PENDING, after.notice.generation + 1,
                              started_at=now, updated_at=now)
        reason = (f"{after.notify.operation} at {after.notify.participant} will be told "
                  f"{after.state.name} (key {after.gid}{branch_of(notice.generation)})")
        return note(replace(after, notice=notice), "notify sent", reason, now)
    if not after.state.settled and after.notice.state is NoticeState.PENDING:
        notice = replace(after.notice, state=NoticeState.SUPERSEDED, updated_at=now)
        return note(replace(after, notice=notice), "notify superseded",
                    "resumed before the notice of its settlement was acknowledged; "
                    "its next settlement is noticed anew", now)
    return after


def deadline(record: TxRecord) -> float:
    """When the pending notice's budget ends (the same on every coordinator)."""
    assert record.notify is not None
    return record.notice.started_at + record.notify.budget_s


def call_plan(record: TxRecord, payload: bytes) -> BranchPlan:
    """The pending notice as one Execute call (``payload``: the settled Transaction)."""
    target = record.notify
    assert target is not None
    return BranchPlan(name=branch_of(record.notice.generation), participant=target.participant,
                      action=target.operation, payload=payload, timeout_s=target.timeout_s,
                      retry=target.retry)


def acknowledged(record: TxRecord, generation: int, attempts: int, now: float) -> TxRecord:
    """The receiver answered OK; unchanged when that generation is no longer pending."""
    if not _current(record, generation):
        return record
    notice = replace(record.notice, state=NoticeState.ACKNOWLEDGED, attempts=attempts,
                     error="", updated_at=now)
    return note(replace(record, notice=notice), "notify acknowledged", "", now)


def gave_up(record: TxRecord, generation: int, attempts: int, error: str, now: float) -> TxRecord:
    """Refused, misconfigured or out of budget: it is not sent again (an operator sees
    why in the history); unchanged when that generation is no longer pending."""
    if not _current(record, generation):
        return record
    notice = replace(record.notice, state=NoticeState.GAVE_UP, attempts=attempts,
                     error=clip(error), updated_at=now)
    return note(replace(record, notice=notice), "notify given up", clip(error), now)


def _current(record: TxRecord, generation: int) -> bool:
    return pending(record) and record.notice.generation == generation
