"""Which transitions must reach the log before the driver acts on them.

Every participant call is idempotent on its key, so recovery may repeat any call the log
shows as possibly made. What the log must show before the next call is therefore what
would make a successor do something *different*, not merely repeat:

- a branch's first call (its intent): a branch the log shows PENDING is one that never
  ran, which compensation skips and nobody ever undoes. A coordinator that lost its lease
  can still make the calls it had started; if the log did not show them, a successor
  compensating the saga would leave their effects in place. A saga's creation announces
  every branch's intent at once instead (``intents_ahead``): while the log says so, a
  PENDING branch is compensated as one that may have run (the participant's barrier makes
  that a null compensation where it never did), so its later branches start unwritten;
- a change of the transaction's state: the saga's turn to compensation (recovery from the
  forward state would run actions again and could commit a saga that compensates), the
  2PC decision (the commit point: presumed abort would undo a commit already sent), a
  terminal or FAILED state;
- a new history entry (operator actions and decisions are a record people read).

A yes vote, a phase-2 acknowledgement or a compensation done are written with the next
transition that must be: after a crash they are asked again, with the same keys, and
answered the same. A 2-branch 2PC transaction costs 3 writes instead of 5; a saga, sequential
or concurrent, 2 whatever its length (its creation and its end) when nothing goes wrong.

The creator of a saga knows which branches it called, so it drives with ``intents_ahead``
cleared, and its next write (a turn to compensation, say) tells the log exactly that: a
branch it never called is not compensated. A coordinator that loads the record from the
log (a takeover, a restart) cannot know, and keeps the announcement.
"""

from __future__ import annotations

from dataclasses import replace

from .records import BranchState, TxRecord


def must_persist(stored: TxRecord, after: TxRecord) -> bool:
    """``stored`` is what the log holds, ``after`` the record the next calls act on."""
    if after.state is not stored.state or len(after.history) != len(stored.history):
        return True
    if stored.intents_ahead:  # every branch's first call is announced already
        return False
    return any(before.state is BranchState.PENDING and now.state is not BranchState.PENDING
               for before, now in zip(stored.branches, after.branches, strict=True))


def announced(created: TxRecord) -> TxRecord:
    """A saga's record as its creation writes it: when branches are left PENDING by the
    first calls, every one's intent announced with them."""
    pending = any(s.state is BranchState.PENDING for s in created.branches)
    return replace(created, intents_ahead=True) if pending else created


def as_creator_drives(stored: TxRecord) -> TxRecord:
    """The record the coordinator whose creation landed drives: it knows which branches it
    has called, so PENDING means never called again, and its next write says so."""
    return replace(stored, intents_ahead=False) if stored.intents_ahead else stored
