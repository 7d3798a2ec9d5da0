"""The check of a start against what its participants list (``Operations``): refusals name
the branch and the operation; no list, a failed or a slow probe never refuses and costs at
most one probe per address and time-to-live; concurrent starts share one probe."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from coordinator import ppb
from coordinator.domain.errors import InvalidArgument
from coordinator.domain.records import BranchPlan, Protocol
from coordinator.engine import OperationsCheck, ServedOperations

LISTED = ppb.OperationsReply(execute=["accounts.debit"], compensate=["accounts.refund"],
                             prepare=["accounts.hold"])


class Participants:
    """Probe answers per address, counted: a list, UNIMPLEMENTED, or a hang."""

    def __init__(self) -> None:
        self.asked: dict[str, int] = {}
        self.hang = asyncio.Event()

    async def probe(self, address: str, timeout_s: float) -> ppb.OperationsReply:
        self.asked[address] = self.asked.get(address, 0) + 1
        await asyncio.sleep(0.01)
        if address.startswith("listed"):
            return LISTED
        if address.startswith("hangs"):
            await self.hang.wait()
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNIMPLEMENTED, grpc.aio.Metadata(),
                                   grpc.aio.Metadata(), "Method not found!")


def branch(name: str, participant: str, action: str, compensation: str = "") -> BranchPlan:
    return BranchPlan(name=name, participant=participant, action=action, compensation=compensation)


async def test_an_action_or_compensation_not_served_is_refused_naming_branch_and_operation() -> None:
    served = ServedOperations(Participants().probe)
    await served.check([branch("debit", "listed:1", "accounts.debit", "accounts.refund")],
                       Protocol.SAGA)
    with pytest.raises(InvalidArgument) as action:
        await served.check([branch("ok", "listed:1", "accounts.debit"),
                            branch("pay", "listed:1", "accounts.debitt")], Protocol.SAGA)
    assert action.value.field == "branches[1].action"
    assert "'pay'" in str(action.value) and "'accounts.debitt'" in str(action.value)
    assert "it serves: accounts.debit" in str(action.value)
    with pytest.raises(InvalidArgument) as undo:
        await served.check([branch("pay", "listed:1", "accounts.debit", "accounts.refnd")],
                           Protocol.SAGA)
    assert undo.value.field == "branches[0].compensation" and "Compensate" in str(undo.value)
    with pytest.raises(InvalidArgument, match=r"branches\[0\]\.action.*Prepare"):
        await served.check([branch("hold", "listed:1", "accounts.debit")], Protocol.TWO_PHASE)
    await served.check([branch("hold", "listed:1", "accounts.hold")], Protocol.TWO_PHASE)


async def test_a_participant_without_the_call_is_not_checked_and_asked_once_per_ttl() -> None:
    participants = Participants()
    now = [0.0]
    served = ServedOperations(participants.probe, OperationsCheck(ttl_s=30.0), clock=lambda: now[0])
    for _ in range(3):
        await served.check([branch("any", "old:1", "whatever.name")], Protocol.SAGA)
    assert participants.asked == {"old:1": 1}
    now[0] = 31.0
    await served.check([branch("any", "old:1", "whatever.name")], Protocol.SAGA)
    assert participants.asked == {"old:1": 2}


async def test_a_participant_that_does_not_answer_holds_a_start_one_probe_deadline_once() -> None:
    participants = Participants()
    served = ServedOperations(participants.probe, OperationsCheck(probe_timeout_s=0.2))
    began = time.monotonic()
    await served.check([branch("a", "hangs:1", "x.y")], Protocol.SAGA)  # not refused
    assert 0.15 < time.monotonic() - began < 1.0
    began = time.monotonic()
    await served.check([branch("a", "hangs:1", "x.y")], Protocol.SAGA)
    assert time.monotonic() - began < 0.05  # cached: no second wait
    assert participants.asked == {"hangs:1": 1}


async def test_concurrent_starts_share_one_probe_per_address() -> None:
    participants = Participants()
    served = ServedOperations(participants.probe)
    plan = [branch("a", "listed:1", "accounts.debit"), branch("b", "old:2", "x.y"),
            branch("c", "listed:1", "accounts.debit")]
    await asyncio.gather(*(served.check(plan, Protocol.SAGA) for _ in range(20)))
    assert participants.asked == {"listed:1": 1, "old:2": 1}
