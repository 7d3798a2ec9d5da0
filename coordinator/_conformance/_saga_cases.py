"""The saga cases: Execute and Compensate under duplicates, reordering and concurrency."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import grpc

from ._checks import Effects, expect_failed, expect_ok, expect_same
from ._driver import Answer, Driver
from ._scenario import SagaSpec

TWINS = 6  # concurrent copies of one call: enough to overlap on a small server

APPLIED_TWICE = "a retried or duplicated call applied again: money debited twice"
REPLY_CHANGED = ("the coordinator may record either answer for the branch: a saga can commit "
                 "or compensate on a reply the service did not mean")
UNDO_FAILED = "the saga cannot finish rolling back: it is left FAILED for an operator"
UNDO_WRONG = "the undo did not restore the state: money lost or created on rollback"


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


async def concurrent_twins(run: SagaRun) -> None:
    gid = run.gid()
    before = await run.fx.snapshot()
    answers = await asyncio.gather(*(run.execute(gid) for _ in range(TWINS)))
    expect_ok(answers[0], "concurrent twin Executes")
    for twin in answers[1:]:
        expect_same(answers[0], twin, "a concurrent twin Execute", REPLY_CHANGED)
    await run.fx.changed(before, "after the twins", "the observe operation does not show the action")
    expect_ok(await run.compensate(gid), "Compensate after the twins", UNDO_FAILED)
    # One undo restores the state only if the twins applied once.
    await run.fx.unchanged(before, "after one Compensate of the twins",
                           "concurrent deliveries of one call applied more than once: money debited twice")
    undos = await asyncio.gather(*(run.compensate(gid, attempt=2) for _ in range(TWINS)))
    for undo in undos:
        expect_ok(undo, "concurrent twin Compensates", UNDO_FAILED)
    await run.fx.unchanged(before, "after concurrent twin Compensates", "money refunded twice")


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
