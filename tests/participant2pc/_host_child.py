"""A participant process the crash tests kill with SIGKILL (tests/support/processes.py),
run as ``python -m tests.participant2pc._host_child MODE ARGS``:

    serve DSN COORDINATOR          serve the test service (recovery every 0.2 s);
                                   prints "serving PORT"
    prepare DSN GID BRANCH ROW_ID  prepare one rows.bump branch, print the vote,
                                   then wait to be killed

Logs (INFO, the SDK's recovery lines included) go to stderr.
"""

from __future__ import annotations

import asyncio
import json

from coordinator import ppb
from coordinator.participant import HostOptions, Op, TwoPhaseOptions, create_engine
from tests.participant2pc._service import build
from tests.support.processes import child_main


async def serve(dsn: str, coordinator: str) -> None:
    two_phase = TwoPhaseOptions(coordinator=coordinator, recovery_interval_s=0.2)
    host = build(create_engine(dsn), HostOptions(two_phase=two_phase))
    port = await host.start("127.0.0.1:0")
    print(f"serving {port}", flush=True)
    await asyncio.Event().wait()


async def prepare(dsn: str, gid: str, branch: str, row_id: str) -> None:
    host = build(create_engine(dsn))
    request = ppb.BranchRequest(gid=gid, branch=branch, operation="rows.bump",
                                payload=json.dumps({"id": row_id}).encode(),
                                idempotency_key=f"{gid}/{branch}/prepare", attempt=1)
    reply = await host.handle(Op.PREPARE, request)
    print(f"voted {ppb.Outcome.Name(reply.outcome)}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    child_main({"serve": serve, "prepare": prepare})
