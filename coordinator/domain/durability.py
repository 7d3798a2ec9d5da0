"""Which transitions must reach the log before the driver acts on them.

Every participant call is idempotent on its key, so recovery may repeat any call whose
outcome the log does not show. What the log must show before the next call is therefore
only what would make recovery do something *different*, not merely repeat:

- a change of the transaction's state: the saga's turn to compensation (recovery from the
  forward state would run actions again, which the barrier answers with stored replies,
  and could commit a saga that compensates), the 2PC decision (the commit point: presumed
  abort would undo a commit that was already sent), a terminal or FAILED state;
- a new history entry (operator actions and decisions are a record people read).

A branch that succeeded, a yes vote, a phase-2 acknowledgement or a compensation done are
written with the next transition that must be: after a crash they are asked again, with
the same keys, and answered the same. A sequential 2-branch saga costs 2 writes, not 3; a
2-branch 2PC transaction 3, not 5.
"""

from __future__ import annotations

from .records import TxRecord


def must_persist(before: TxRecord, after: TxRecord) -> bool:
    return after.state is not before.state or len(after.history) != len(before.history)
