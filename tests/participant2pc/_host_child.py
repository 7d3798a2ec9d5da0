"""A participant process the crash tests kill with SIGKILL (tests/support/processes.py),
run as ``python -m tests.participant2pc._host_child MODE ARGS``:

    serve DSN COORDINATOR          serve the test service (recovery every 0.2 s);
                                   prints "serving PORT"
    prepare DSN GID BRANCH ROW_ID  prepare one rows.bump branch, print the vote,
                                   then wait to be killed
    crash DSN POINT GID BRANCH ROW_ID
                                   run a rows.bump branch up to POINT, print "at POINT",
                                   then wait there to be killed (see CRASH_POINTS), or
                                   for SIGUSR1 to go on: then print "replied OUTCOME MESSAGE"

Logs (INFO, the SDK's recovery lines included) go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from coordinator import ppb
from coordinator.participant import HostOptions, Op, TwoPhaseOptions, create_engine
from coordinator.participant.two_phase import _branches
from coordinator.participant.two_phase._table import XaState
from coordinator.participant.two_phase._xa import MysqlXa, PostgresXa, XaDriver
from tests.participant2pc._service import build
from tests.support.processes import child_main

CRASH_POINTS = {
    # prepare: business run and witness written, the txc_xa row not yet
    "before-row": Op.PREPARE,
    # prepare: the row committed (vote and result), PREPARE not yet sent
    "before-prepare": Op.PREPARE,
    # commit: the XID committed, the reply not sent
    "after-commit": Op.COMMIT,
    # abort of a prepared branch: the XID rolled back, the row not yet marked aborted
    "after-rollback": Op.ABORT,
}


async def serve(dsn: str, coordinator: str) -> None:
    two_phase = TwoPhaseOptions(coordinator=coordinator, recovery_interval_s=0.2)
    host = build(create_engine(dsn), HostOptions(two_phase=two_phase))
    port = await host.start("127.0.0.1:0")
    print(f"serving {port}", flush=True)
    await asyncio.Event().wait()


def _request(op: Op, gid: str, branch: str, row_id: str) -> ppb.BranchRequest:
    return ppb.BranchRequest(gid=gid, branch=branch, operation="rows.bump",
                             payload=json.dumps({"id": row_id}).encode(),
                             idempotency_key=f"{gid}/{branch}/{op.value}", attempt=1)


async def prepare(dsn: str, gid: str, branch: str, row_id: str) -> None:
    host = build(create_engine(dsn))
    reply = await host.handle(Op.PREPARE, _request(Op.PREPARE, gid, branch, row_id))
    print(f"voted {ppb.Outcome.Name(reply.outcome)}", flush=True)
    await asyncio.Event().wait()


async def crash(dsn: str, point: str, gid: str, branch: str, row_id: str) -> None:
    host = build(create_engine(dsn))
    op = CRASH_POINTS[point]
    if op is not Op.PREPARE:  # phase 2 of a branch this process prepared
        reply = await host.handle(Op.PREPARE, _request(Op.PREPARE, gid, branch, row_id))
        assert reply.outcome == ppb.OUTCOME_OK, reply.message
    _stop_at(point)
    reply = await host.handle(op, _request(op, gid, branch, row_id))
    print(f"replied {ppb.Outcome.Name(reply.outcome)} {reply.message}", flush=True)
    await asyncio.Event().wait()


async def _wait_to_be_killed(point: str) -> None:
    """Report reaching ``point``, then wait there (SIGUSR1 lets the call go on)."""
    go_on = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go_on.set)
    print(f"at {point}", flush=True)
    await go_on.wait()


def _stop_at(point: str) -> None:
    """Make the SDK stop at ``point`` (a real process, stopped between two of its real
    statements: the test kills it there)."""
    if point == "before-row":
        names = vars(_branches)  # the module's own reference to _table.claim
        claim = names["claim"]

        async def claim_then_stop(*args: Any, **kwargs: Any) -> bool:
            if args[4] is XaState.PREPARED:
                await _wait_to_be_killed(point)
            return bool(await claim(*args, **kwargs))

        names["claim"] = claim_then_stop
        return
    name = {"before-prepare": "prepare", "after-commit": "commit_prepared",
            "after-rollback": "rollback_prepared"}[point]
    for driver in (PostgresXa, MysqlXa):
        _wrap(driver, name, point, before=point.startswith("before"))


def _wrap(driver: type[XaDriver], name: str, point: str, *, before: bool) -> None:
    original: Callable[..., Awaitable[None]] = getattr(driver, name)

    async def stopping(self: XaDriver, *args: Any) -> None:
        if before:
            await _wait_to_be_killed(point)
        await original(self, *args)
        if not before:
            await _wait_to_be_killed(point)

    setattr(driver, name, stopping)


if __name__ == "__main__":
    child_main({"serve": serve, "prepare": prepare, "crash": crash})
