"""The saga cases: Execute and Compensate under duplicates, reordering and concurrency."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass

import grpc

from ._checks import Effects, expect_failed, expect_ok, expect_same
from ._driver import Answer, Driver
from ._scenario import SagaSpec

TWINS = 6  # concurrent copies of one call: enough to overlap on a small server
RACE_DELAYS_S = (0.0, 0.002, 0.01)  # how long after an Execute its racing Compensate is sent

APPLIED_TWICE = "a retried or duplicated call applied again: money debited twice"
REPLY_CHANGED = ("the coordinator may record either answer for the branch: a saga can commit "
                 "or compensate on a reply the service did not mean")
UNDO_FAILED = "the saga cannot finish rolling back: it is left FAILED for an operator"
UNDO_WRONG = "the undo did not restore the state: money lost or created on rollback"
TWINS_APPLIED = "concurrent deliveries of one call applied more than once: money debited twice"


@dataclass
class SagaRun:
    """One case's calls on the saga branch, keyed as the coordinator keys them."""

    driver: Driver
    spec: SagaSpec
    fx: Effects
    case: str

    def gid(self, suffix: str = "") -> str:
        return self.driver.gid(self.case + suffix)

    async def execute(self, gid: str, *, refused: bool = False, attempt: int = 1) -> Answer:
        return await self.driver.settle("execute", gid, self.spec.action, self._payload(refused),
                                        attempt=attempt)

    async def compensate(self, gid: str, *, refused: bool = False, attempt: int = 1) -> Answer:
        return await self.driver.settle("compensate", gid, self.spec.compensation,
                                        self._payload(refused), attempt=attempt)

    async def cut_short(self, op: str, gid: str, attempt: int) -> None:
        """A call whose caller stops waiting at once: it may or may not have run."""
        operation = self.spec.action if op == "execute" else self.spec.compensation
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.driver.once(op, gid, operation, self.spec.payload, attempt=attempt,
                                   timeout_s=0.002)

    def _payload(self, refused: bool) -> bytes:
        payload = self.spec.refused_payload if refused else self.spec.payload
        assert payload is not None, "a case needing refused_payload runs only when it is given"
        return payload


async def _applied(run: SagaRun, gid: str) -> tuple[Answer, bytes | None, bytes | None]:
    """Execute that must succeed and show: its answer, the state before and after it."""
    before = await run.fx.snapshot()
    first = await run.execute(gid)
    expect_ok(first, f"Execute {run.spec.action!r}")
    after = await run.fx.changed(before, "after the action",
                                 "the observe operation does not show the action: fix the scenario")
    return first, before, after


async def duplicate_execute(run: SagaRun) -> None:
    gid = run.gid()
    first, _, after = await _applied(run, gid)
    again = await run.execute(gid)
    # Effects before replies: a second application is the worse news.
    await run.fx.unchanged(after, "after a duplicate Execute", APPLIED_TWICE)
    expect_same(first, again, "a duplicate Execute", REPLY_CHANGED)
    await run.compensate(gid)  # leave the scenario's state as it was


async def retry_attempts(run: SagaRun) -> None:
    gid = run.gid()
    first, _, after = await _applied(run, gid)
    again = [await run.execute(gid, attempt=attempt) for attempt in (2, 3)]
    await run.fx.unchanged(after, "after attempts 2 and 3 of the same call", APPLIED_TWICE)
    for attempt, answer in zip((2, 3), again, strict=True):
        expect_same(first, answer, f"Execute attempt {attempt}", REPLY_CHANGED)
    await run.compensate(gid)


async def null_compensation(run: SagaRun) -> None:
    before = await run.fx.snapshot()
    answer = await run.compensate(run.gid())
    expect_ok(answer, "Compensate before any Execute (a null compensation)", UNDO_FAILED)
    await run.fx.unchanged(before, "after compensating an action that never ran",
                           "an undo ran for an action that never happened: money refunded "
                           "that was never debited")


async def hanging_execute(run: SagaRun) -> None:
    gid = run.gid()
    expect_ok(await run.compensate(gid), "Compensate before any Execute", UNDO_FAILED)
    # Observed after the null compensation: what that did is saga.null_compensation's verdict.
    before = await run.fx.snapshot()
    late = await run.execute(gid)
    expect_failed(late, "an Execute arriving after its Compensate (a hanging request)",
                  "an action applied after its saga rolled back, and nothing will undo it: "
                  "money debited and never refunded")
    await run.fx.unchanged(before, "after the late Execute",
                           "an action applied after its saga rolled back: money debited and never refunded")


async def compensate_twice(run: SagaRun) -> None:
    gid = run.gid()
    _, before, _ = await _applied(run, gid)
    first = await run.compensate(gid)
    expect_ok(first, "Compensate after Execute", UNDO_FAILED)
    await run.fx.unchanged(before, "after Compensate (as before the action)", UNDO_WRONG)
    again = await run.compensate(gid, attempt=2)
    await run.fx.unchanged(before, "after a repeated Compensate", "money refunded twice")
    expect_same(first, again, "a repeated Compensate", REPLY_CHANGED)


async def refused_not_undone(run: SagaRun) -> None:
    gid = run.gid()
    before = await run.fx.snapshot()
    refused = await run.execute(gid, refused=True)
    expect_failed(refused, "Execute with refused_payload",
                  "the scenario's refused payload was accepted: fix the scenario")
    await run.fx.unchanged(before, "after a refused Execute",
                           "a refused action left changes behind that no compensation will know of")
    expect_same(refused, await run.execute(gid, refused=True, attempt=2), "a repeated refused Execute",
                REPLY_CHANGED)
    expect_ok(await run.compensate(gid, refused=True), "Compensate of a refused action", UNDO_FAILED)
    await run.fx.unchanged(before, "after compensating a refused action",
                           "a refused debit was refunded anyway: money created")


async def _reference(run: SagaRun) -> tuple[bytes, bytes] | None:
    """The state before and after one clean Execute (then undone): what one application
    does, for the cases that count applications."""
    gid = run.gid("-ref")
    _, before, after = await _applied(run, gid)
    expect_ok(await run.compensate(gid), "Compensate after Execute", UNDO_FAILED)
    await run.fx.unchanged(before, "after Compensate (as before the action)", UNDO_WRONG)
    return None if before is None or after is None else (before, after)


async def concurrent_twins(run: SagaRun) -> None:
    """First calls racing: the twins are all first deliveries, none has finished before the
    others start (repeats of a finished call are saga.compensate_twice's)."""
    reference = await _reference(run)
    gid = run.gid()
    base = await run.fx.snapshot()
    answers = await asyncio.gather(*(run.execute(gid) for _ in range(TWINS)))
    expect_ok(answers[0], "concurrent twin Executes")
    await run.fx.one_more(base, reference, f"after {TWINS} concurrent first Executes", TWINS_APPLIED)
    for twin in answers[1:]:
        expect_same(answers[0], twin, "a concurrent twin Execute", REPLY_CHANGED)
    await _concurrent_undos(run, run.gid("-undo"))
    expect_ok(await run.compensate(gid), "Compensate after the twin Executes", UNDO_FAILED)
    # One undo restores the state only if the twins applied once (the check when the
    # observation is not a number).
    await run.fx.unchanged(base, "after one Compensate of the twin Executes", TWINS_APPLIED)


async def _concurrent_undos(run: SagaRun, gid: str) -> None:
    """An Execute, then concurrent first Compensates of it: undone once."""
    _, before, _ = await _applied(run, gid)
    undos = await asyncio.gather(*(run.compensate(gid) for _ in range(TWINS)))
    expect_ok(undos[0], "concurrent twin Compensates", UNDO_FAILED)
    await run.fx.unchanged(before, f"after {TWINS} concurrent first Compensates (as before the "
                           "action)", "concurrent deliveries of one undo applied more than once: "
                           "money refunded twice")
    for undo in undos[1:]:
        expect_same(undos[0], undo, "a concurrent twin Compensate", REPLY_CHANGED)


async def racing_compensate(run: SagaRun) -> None:
    """A Compensate arriving while its Execute may still run (the coordinator timed the
    Execute out and rolls back): whichever goes first, the state ends as before. A few
    rounds, the Compensate sent a little later each time, to meet the Execute at another
    point of its work."""
    for number, delay_s in enumerate(RACE_DELAYS_S):
        gid = run.gid(f"-{number}")
        before = await run.fx.snapshot()
        _, undo = await _both(run.execute(gid), _later(delay_s, run.compensate(gid)))
        expect_ok(undo, "a Compensate sent while its Execute runs", UNDO_FAILED)
        await run.fx.unchanged(before, "after an Execute and its Compensate sent at once",
                               "an action still running when its undo arrived was applied and "
                               "never undone: money debited and never refunded")


async def _later(delay_s: float, call: Awaitable[Answer]) -> Answer:
    await asyncio.sleep(delay_s)
    return await call


async def _both(first: Awaitable[Answer], second: Awaitable[Answer]) -> tuple[Answer, Answer]:
    """Both calls at once; both finish before an error of either is raised."""
    answers = await asyncio.gather(first, second, return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    one, two = answers
    assert isinstance(one, Answer) and isinstance(two, Answer)
    return one, two


async def unknown_outcome(run: SagaRun) -> None:
    gid = run.gid()
    before = await run.fx.snapshot()
    for attempt in (1, 2):
        await run.cut_short("execute", gid, attempt)
    expect_ok(await run.execute(gid, attempt=3), "Execute retried after calls cut short")
    await run.cut_short("compensate", gid, 1)
    expect_ok(await run.compensate(gid, attempt=2), "Compensate retried after a call cut short",
              UNDO_FAILED)
    await run.fx.unchanged(before, "after Execute and Compensate, each retried after a timeout",
                           "a call retried after a timeout or a RETRY answer applied twice: money "
                           "debited (or refunded) twice")


async def stable_replies(run: SagaRun) -> None:
    gid = run.gid()
    first, _, _ = await _applied(run, gid)
    undo = await run.compensate(gid)
    expect_ok(undo, "Compensate after Execute", UNDO_FAILED)
    settled = await run.fx.snapshot()
    late = await run.execute(gid, attempt=4)
    expect_same(first, late, "a delayed duplicate of the Execute, after the Compensate",
                "a stored reply was not kept: a late duplicate sees another answer (or was run again)")
    expect_same(undo, await run.compensate(gid, attempt=3), "a delayed duplicate Compensate", REPLY_CHANGED)
    await run.fx.unchanged(settled, "after delayed duplicates",
                           "a delayed duplicate ran again after the saga settled: money moved twice")
