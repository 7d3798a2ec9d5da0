"""The notice case: a settlement notice (an Execute on branch "/notify" with key
"{gid}/notify" and a serialized txc.v1.Transaction as payload) is applied once, however
often the coordinator delivers it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import grpc

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..domain.notice import NOTICE_BRANCH
from ._checks import Effects, expect_ok, expect_same
from ._driver import Answer, Driver
from ._scenario import NotifySpec

NOTIFIED_TWICE = ("a notice delivered again (the coordinator delivers at least once) was "
                  "applied again: the receiver acts twice on one settlement")
REPLY_CHANGED = "a repeated notice answered differently: the coordinator may record either"


@dataclass
class NotifyRun:
    driver: Driver
    spec: NotifySpec
    fx: Effects
    case: str

    def gid(self) -> str:
        return self.driver.gid(self.case)

    async def tell(self, gid: str, attempt: int = 1) -> Answer:
        return await self.driver.settle("execute", gid, self.spec.operation, settled(gid),
                                        attempt=attempt, branch=NOTICE_BRANCH)

    async def cut_short(self, gid: str, attempt: int) -> None:
        """A delivery whose reply the coordinator stops waiting for at once."""
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.driver.once("execute", gid, self.spec.operation, settled(gid),
                                   attempt=attempt, timeout_s=0.002, branch=NOTICE_BRANCH)


def settled(gid: str) -> bytes:
    """What the coordinator sends: the settled transaction (a committed saga here)."""
    now = time.time_ns()
    tx = pb.Transaction(gid=gid, protocol=pb.PROTOCOL_SAGA, state=pb.TX_STATE_COMMITTED,
                        branches=[pb.BranchStatus(name="pay", state=pb.BRANCH_STATE_SUCCEEDED)],
                        notice=pb.NoticeStatus(state=pb.NOTICE_STATE_PENDING, generation=1))
    tx.created_at.FromNanoseconds(now)
    tx.updated_at.FromNanoseconds(now)
    return tx.SerializeToString()


async def once(run: NotifyRun) -> None:
    gid = run.gid()
    before = await run.fx.snapshot()
    first = await run.tell(gid)
    expect_ok(first, f"the notice {run.spec.operation!r}")
    after = await run.fx.changed(before, "after the notice",
                                 "the observe operation does not show the notice: fix the scenario")
    await run.cut_short(gid, attempt=2)  # a retry whose reply was lost
    again = await run.tell(gid, attempt=3)  # and the one after it
    await run.fx.unchanged(after, "after the notice was delivered again", NOTIFIED_TWICE)
    expect_same(first, again, "a repeated notice", REPLY_CHANGED)
