"""The 2PC cases: Prepare votes, Commit and Abort under duplicates, reordering and concurrency."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from ._checks import Effects, expect_failed, expect_ok, expect_same
from ._driver import Answer, Driver
from ._saga_cases import REPLY_CHANGED, TWINS
from ._scenario import TwoPhaseSpec

COMMITTED_TWICE = "a repeated or concurrent commit applied again: money debited twice"
PHASE2_FAILED = ("phase 2 cannot finish: the transaction is left FAILED, half committed, with "
                 "this branch's locks held until an operator steps in")
VOTE_NEEDED = "the scenario's 2PC payload must be accepted: fix the scenario or the service"


@dataclass
class TwoPhaseRun:
    """One case's calls on the 2PC branch, keyed as the coordinator keys them."""

    driver: Driver
    spec: TwoPhaseSpec
    fx: Effects
    case: str

    def gid(self, suffix: str = "") -> str:
        return self.driver.gid(self.case + suffix)

    async def call(self, op: str, gid: str, *, refused: bool = False, attempt: int = 1) -> Answer:
        payload = self.spec.refused_payload if refused else self.spec.payload
        assert payload is not None, "a case needing refused_payload runs only when it is given"
        return await self.driver.settle(op, gid, self.spec.operation, payload, attempt=attempt)

    async def cut_short(self, op: str, gid: str, attempt: int) -> None:
        """A call whose caller stops waiting at once: it may or may not have run."""
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.driver.once(op, gid, self.spec.operation, self.spec.payload,
                                   attempt=attempt, timeout_s=0.002)

    @asynccontextmanager
    async def released(self, gid: str) -> AsyncIterator[None]:
        """On a failed case, abort the branch: a prepared branch left behind would hold the
        service's locks (and, on PostgreSQL, a prepared transaction) for ever."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                await self.driver.once("abort", gid, self.spec.operation, self.spec.payload)
            raise


async def _commit(run: TwoPhaseRun, gid: str) -> tuple[Answer, Answer]:
    """Prepare (yes) then Commit, both required OK: the vote and the commit's answer."""
    vote = await run.call("prepare", gid)
    expect_ok(vote, f"Prepare {run.spec.operation!r}", VOTE_NEEDED)
    done = await run.call("commit", gid)
    expect_ok(done, "Commit of a prepared branch", PHASE2_FAILED)
    return vote, done


async def _reference(run: TwoPhaseRun) -> tuple[bytes, bytes] | None:
    """The state before and after one clean prepare + commit: what one application does."""
    gid = run.gid("-ref")
    before = await run.fx.snapshot()
    async with run.released(gid):
        await _commit(run, gid)
    after = await run.fx.changed(before, "after a commit",
                                 "commit answered OK but its effect is missing: a committed write was lost")
    return None if before is None or after is None else (before, after)


async def prepare_commit(run: TwoPhaseRun) -> None:
    gid = run.gid()
    before = await run.fx.snapshot()
    async with run.released(gid):
        vote = await run.call("prepare", gid)
        expect_ok(vote, f"Prepare {run.spec.operation!r}", VOTE_NEEDED)
        expect_same(vote, await run.call("prepare", gid, attempt=2), "a repeated Prepare",
                    "a repeated prepare changed its vote: the coordinator may commit a branch that "
                    "voted no, or abort one that is prepared")
        expect_ok(await run.call("commit", gid), "Commit of a prepared branch", PHASE2_FAILED)
    await run.fx.changed(before, "after Commit",
                         "commit answered OK but its effect is missing: a committed write was lost")


async def commit_twice(run: TwoPhaseRun) -> None:
    gid = run.gid()
    async with run.released(gid):
        _, done = await _commit(run, gid)
    after = await run.fx.snapshot()
    again = [await run.call("commit", gid, attempt=attempt) for attempt in (1, 2)]
    await run.fx.unchanged(after, "after repeated Commits", COMMITTED_TWICE)
    for answer in again:
        expect_same(done, answer, "a repeated Commit", PHASE2_FAILED)


async def prepare_abort(run: TwoPhaseRun) -> None:
    gid = run.gid()
    before = await run.fx.snapshot()
    async with run.released(gid):
        expect_ok(await run.call("prepare", gid), f"Prepare {run.spec.operation!r}", VOTE_NEEDED)
    undo = await run.call("abort", gid)
    expect_ok(undo, "Abort of a prepared branch",
              "the prepared work cannot be rolled back: its locks stay held and the transaction "
              "is left FAILED")
    expect_same(undo, await run.call("abort", gid, attempt=2), "a repeated Abort", REPLY_CHANGED)
    await run.fx.unchanged(before, "after Abort", "an aborted transaction left its changes behind")


async def abort_before_prepare(run: TwoPhaseRun) -> None:
    gid = run.gid()
    before = await run.fx.snapshot()
    expect_ok(await run.call("abort", gid), "Abort before any Prepare (a null abort)",
              "the coordinator cannot finish aborting: the transaction is left FAILED")
    async with run.released(gid):
        late = await run.call("prepare", gid)
        expect_failed(late, "a Prepare arriving after its Abort (vote no)",
                      "a branch prepared after its transaction aborted: its locks and pending "
                      "changes are held for a transaction that is over, until an operator steps in")
    await run.fx.unchanged(before, "after the late Prepare", "an aborted transaction changed the state")
    if late.ok:  # a broken participant prepared it: release what it holds
        await run.call("abort", gid, attempt=2)


async def commit_unknown(run: TwoPhaseRun) -> None:
    gid = run.gid()
    before = await run.fx.snapshot()
    answer = await run.call("commit", gid)
    expect_failed(answer, "Commit of a branch that was never prepared",
                  "the service claims to have committed work it never prepared: the coordinator "
                  "reports a transaction committed whose write does not exist")
    await run.fx.unchanged(before, "after Commit of an unknown branch",
                           "a commit of nothing changed the state")


async def refused_vote(run: TwoPhaseRun) -> None:
    gid = run.gid()
    before = await run.fx.snapshot()
    async with run.released(gid):
        vote = await run.call("prepare", gid, refused=True)
        expect_failed(vote, "Prepare with refused_payload (vote no)",
                      "the scenario's refused payload was accepted: fix the scenario")
        expect_same(vote, await run.call("prepare", gid, refused=True, attempt=2),
                    "a repeated Prepare that voted no",
                    "a repeated prepare changed its vote: the coordinator may commit a branch that voted no")
    expect_ok(await run.call("abort", gid, refused=True), "Abort after a no vote",
              "the coordinator cannot finish aborting: the transaction is left FAILED")
    await run.fx.unchanged(before, "after a no vote and Abort", "a refused branch left changes behind")


async def concurrent_twins(run: TwoPhaseRun) -> None:
    reference = await _reference(run)
    gid = run.gid()
    base = await run.fx.snapshot()
    async with run.released(gid):
        votes = await asyncio.gather(*(run.call("prepare", gid) for _ in range(TWINS)))
        expect_ok(votes[0], "concurrent twin Prepares", VOTE_NEEDED)
        for vote in votes[1:]:
            expect_same(votes[0], vote, "a concurrent twin Prepare", REPLY_CHANGED)
        commits = await asyncio.gather(*(run.call("commit", gid) for _ in range(TWINS)))
    expect_ok(commits[0], "concurrent twin Commits", PHASE2_FAILED)
    await run.fx.one_more(base, reference, "after concurrent twins of Prepare and Commit", COMMITTED_TWICE)
    for done in commits[1:]:
        expect_same(commits[0], done, "a concurrent twin Commit", PHASE2_FAILED)


async def unknown_outcome(run: TwoPhaseRun) -> None:
    reference = await _reference(run)
    gid = run.gid()
    base = await run.fx.snapshot()
    async with run.released(gid):
        for attempt in (1, 2):
            await run.cut_short("prepare", gid, attempt)
        expect_ok(await run.call("prepare", gid, attempt=3), "Prepare retried after calls cut short",
                  VOTE_NEEDED)
        await run.cut_short("commit", gid, 1)
        expect_ok(await run.call("commit", gid, attempt=2), "Commit retried after a call cut short",
                  PHASE2_FAILED)
    await run.fx.one_more(base, reference, "after Prepare and Commit, each retried after a timeout",
                          "a call retried after a timeout or a RETRY answer applied twice: money "
                          "debited twice")
