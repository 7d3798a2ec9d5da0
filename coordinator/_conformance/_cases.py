"""The catalogue: every case's name, what it checks, what it needs from the scenario."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import _notify_cases as notify
from . import _saga_cases as saga
from . import _two_phase_cases as tpc


@dataclass(frozen=True)
class Case:
    name: str
    checks: str
    protocol: str  # "saga", "two_phase" or "notify": the scenario section it needs
    run: Callable[[Any], Awaitable[None]]  # takes a SagaRun, a TwoPhaseRun or a NotifyRun
    needs_refused: bool = False


CASES: tuple[Case, ...] = (
    Case("saga.duplicate_execute", "the same Execute twice with one key: same reply, applied once",
         "saga", saga.duplicate_execute),
    Case("saga.retry_attempts", "attempts 2 and 3 with the same key: same reply, applied once",
         "saga", saga.retry_attempts),
    Case("saga.null_compensation", "Compensate before Execute answers OK and changes nothing",
         "saga", saga.null_compensation),
    Case("saga.hanging_execute", "an Execute after its Compensate is refused and changes nothing",
         "saga", saga.hanging_execute),
    Case("saga.compensate_twice", "Compensate twice: undone once, same reply", "saga",
         saga.compensate_twice),
    Case("saga.refused_not_undone", "a refused Execute keeps its FAILED; its Compensate undoes nothing",
         "saga", saga.refused_not_undone, needs_refused=True),
    Case("saga.concurrent_twins", "concurrent first Executes apply once; concurrent first "
         "Compensates (another gid) undo once", "saga", saga.concurrent_twins),
    Case("saga.racing_compensate", "a Compensate sent while its Execute runs: the state ends as "
         "before", "saga", saga.racing_compensate),
    Case("saga.unknown_outcome", "calls cut short by a deadline, or answered RETRY, repeated with the "
         "same key apply once", "saga", saga.unknown_outcome),
    Case("saga.stable_replies", "delayed duplicates get the stored replies and result bytes",
         "saga", saga.stable_replies),
    Case("2pc.prepare_commit", "Prepare votes yes, a repeat keeps the vote, Commit applies",
         "two_phase", tpc.prepare_commit),
    Case("2pc.commit_twice", "Commit repeated: same reply, applied once", "two_phase", tpc.commit_twice),
    Case("2pc.prepare_abort", "Abort of a prepared branch undoes it; a repeat answers the same",
         "two_phase", tpc.prepare_abort),
    Case("2pc.abort_before_prepare", "Abort before Prepare answers OK; the late Prepare votes no",
         "two_phase", tpc.abort_before_prepare),
    Case("2pc.commit_unknown", "Commit of a branch never prepared is FAILED and changes nothing",
         "two_phase", tpc.commit_unknown),
    Case("2pc.refused_vote", "a no vote is kept on repeat; its Abort changes nothing", "two_phase",
         tpc.refused_vote, needs_refused=True),
    Case("2pc.concurrent_twins", "concurrent first Prepares, then first Commits: same answers, "
         "applied once", "two_phase", tpc.concurrent_twins),
    Case("2pc.unknown_outcome", "Prepare and Commit cut short by a deadline, or answered RETRY, "
         "repeated with the same key apply once", "two_phase", tpc.unknown_outcome),
    Case("notify.once", "a settlement notice (key {gid}/notify) delivered again, once with its "
         "reply lost, is applied once and answered the same", "notify", notify.once),
)
