"""Which transitions must reach the log before the driver acts on them.

Every participant call is idempotent on its key, so recovery may repeat any call the log
shows as possibly made. What the log must show before the next call is therefore what
would make a successor do something *different*, not merely repeat:

- a branch's first call (its intent): a branch the log shows PENDING is one that never
  ran, which compensation skips and nobody ever undoes. A coordinator that lost its lease
  can still make the calls it had started; if the log did not show them, a successor
  compensating the saga would leave their effects in place;
- a change of the transaction's state: the saga's turn to compensation (recovery from the
  forward state would run actions again and could commit a saga that compensates), the
  2PC decision (the commit point: presumed abort would undo a commit already sent), a
  terminal or FAILED state;
- a new history entry (operator actions and decisions are a record people read).

A yes vote, a phase-2 acknowledgement or a compensation done are written with the next
transition that must be: after a crash they are asked again, with the same keys, and
answered the same. A 2-branch 2PC transaction costs 3 writes instead of 5; a sequential
saga still writes each next branch's intent (3 writes for 2 branches), a concurrent one
whose branches all start at once 2.
"""

from __future__ import annotations

from .records import BranchState, TxRecord


def must_persist(stored: TxRecord, after: TxRecord) -> bool:
    """``stored`` is what the log holds, ``after`` the record the next calls act on."""
    if after.state is not stored.state or len(after.history) != len(stored.history):
        return True
    return any(before.state is BranchState.PENDING and now.state is not BranchState.PENDING
               for before, now in zip(stored.branches, after.branches, strict=True))
