"""The child the outbox crash tests kill with SIGKILL (tests/support/processes.py):

    python -m tests.participant._outbox_child write DSN GID     commit a business row + a
                                                                StartSaga message, then hang
    python -m tests.participant._outbox_child relay DSN TARGET  run a relay against TARGET
                                                                until killed
"""

from __future__ import annotations

import asyncio

from coordinator import pb as cpb
from coordinator.participant import Relay, RelayOptions, StartSagaSender, create_engine, outbox
from tests.support.processes import child_main

LEASE = 1.0


def saga(gid: str) -> cpb.StartSagaRequest:
    branch = cpb.Branch(name="debit", participant="127.0.0.1:1", action="accounts.debit",
                        compensation="accounts.refund", payload=b"{}")
    return cpb.StartSagaRequest(gid=gid, branches=[branch])


async def write(dsn: str, gid: str) -> None:
    from sqlalchemy import text

    engine = create_engine(dsn)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO sdk_effects (gid, op, amount) VALUES (:g, 'execute', 1)"),
                           {"g": gid})
        message_id = await outbox.add_start_saga(conn, saga(gid))
    print(f"committed {message_id}", flush=True)
    await asyncio.Event().wait()  # never delivers: the test kills us here


async def relay(dsn: str, target: str) -> None:
    engine = create_engine(dsn)
    options = RelayOptions(lease_s=LEASE, send_timeout_s=LEASE / 2.5, poll_interval_s=0.05,
                           initial_backoff_s=0.01)
    print("relaying", flush=True)
    await Relay(engine, {outbox.START_SAGA: StartSagaSender(target)}, options).run()


if __name__ == "__main__":
    child_main({"write": write, "relay": relay})
