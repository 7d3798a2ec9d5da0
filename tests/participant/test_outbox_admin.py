"""The outbox refuses at write time a plan the coordinator would refuse, and an operator
lists, retries and discards messages with ``txc outbox`` (a real process) on real
PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from coordinator import Saga, Step
from coordinator import pb as cpb
from coordinator.participant import OutboxError, Relay, RelayOptions, StartSagaSender, outbox
from coordinator.participant._db.tables import outbox as outbox_table
from coordinator.participant.outbox import START_SAGA
from tests.support.processes import ROOT

from ._outbox_child import saga
from ._receiver import SagaReceiver
from .conftest import Db
from .test_outbox import FAST, Relaying, clear_due, gids, queue, receiver, relay_for, row

__all__ = ["receiver", "relay_for"]  # the fixtures, shared with test_outbox

pytestmark = pytest.mark.integration


async def rows_of(db: Db, gid: str) -> int:
    async with db.engine.connect() as conn:
        payloads = (await conn.execute(select(outbox_table.c.payload)
                                       .where(outbox_table.c.kind == START_SAGA))).scalars()
        return sum(cpb.StartSagaRequest.FromString(p).gid == gid for p in payloads)


def txc(db: Db, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", "outbox", *args, "--dsn", db.dsn],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def sender_target(r: SagaReceiver) -> str:
    return f"127.0.0.1:{r.port}"


async def run_txc(db: Db, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(txc, db, *args)


async def test_a_plan_the_coordinator_would_refuse_is_refused_at_add_naming_the_field(db: Db) -> None:
    with pytest.raises(OutboxError, match=r"StartSagaRequest\.gid: must be 1-128 characters"):
        async with db.engine.begin() as conn:
            await outbox.add_start_saga(conn, saga("order/42"))
    assert await rows_of(db, "order/42") == 0
    bad = saga("order-bad-address")
    bad.branches[0].participant = "accounts"  # no port
    async with db.engine.begin() as conn:
        with pytest.raises(OutboxError, match=r"branches\[0\]\.participant: 'accounts' is not host:port"):
            await outbox.add_start_saga(conn, bad)
    cycle = Saga(gid="order-cycle", concurrent=True, steps=[
        Step("a", "127.0.0.1:1", "x.a", after=["b"]), Step("b", "127.0.0.1:1", "x.b", after=["a"])])
    async with db.engine.begin() as conn:
        with pytest.raises(OutboxError, match=r"branches\.after: cycle"):
            await outbox.add_start_saga(conn, cycle)


async def test_a_saga_built_with_the_client_is_queued_as_its_request(db: Db) -> None:
    (gid,) = gids(1)
    plan = Saga(gid=gid, steps=[Step("debit", "accounts:7001", "accounts.debit", "accounts.refund",
                                     {"account": "alice", "amount": 30})])
    async with db.engine.begin() as conn:
        message_id = await outbox.add_start_saga(conn, plan)
    stored = cpb.StartSagaRequest.FromString(bytes((await row(db.engine, message_id))["payload"]))
    assert stored == plan.to_proto()


async def test_list_retry_and_discard_from_the_command_line(db: Db, relay_for: Relaying) -> None:
    r, sender = relay_for
    await clear_due(db.engine)
    refused, dropped = gids(2)
    r.invalid.add(refused)
    refused_id, dropped_id = await queue(db.engine, refused, dropped)
    relay = Relay(db.engine, {START_SAGA: sender}, FAST)
    # A relay patient enough to be still delivering while the command runs: the row stays
    # claimed until the receiver lets the call through.
    patient = StartSagaSender(sender_target(r), timeout_s=60.0)
    holding = Relay(db.engine, {START_SAGA: patient},
                    RelayOptions(lease_s=120.0, send_timeout_s=50.0, send_attempts=1))
    r.hold.add(dropped)
    pass_ = asyncio.ensure_future(holding.run_once())
    try:
        while r.calls[dropped] == 0:
            await asyncio.sleep(0.02)
        busy = await run_txc(db, "discard", str(dropped_id), "--reason", "customer cancelled")
        assert busy.returncode == 1 and "a relay is delivering it now" in busy.stderr
    finally:
        r.hold.clear()
        r.release.set()
        await pass_
        await patient.close()

    listed = await run_txc(db, "list", "--status", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [e for e in json.loads(listed.stdout) if e["id"] == refused_id]
    assert (entry["status"], entry["kind"], entry["gid"], entry["attempts"]) == (
        "failed", START_SAGA, refused, 1)
    assert "INVALID_ARGUMENT" in entry["last_error"] and "payload" not in entry
    table = await run_txc(db, "list")
    assert refused in table.stdout and "ATTEMPTS" in table.stdout

    r.invalid.clear()  # the receiver's side is fixed; the operator retries
    retried = await run_txc(db, "retry", str(refused_id), "--reason", "allow-list fixed")
    assert retried.returncode == 0, retried.stderr
    assert f"message {refused_id}: pending again" in retried.stdout
    assert "allow-list fixed" in retried.stderr  # the audit line
    state = await row(db.engine, refused_id)
    assert state["status"] == "pending" and "retried by" in str(state["last_error"])
    assert "INVALID_ARGUMENT" in str(state["last_error"])
    assert (await relay.run_once()).sent == 1
    assert (await row(db.engine, refused_id))["status"] == "sent" and r.created[refused] == 1

    # A sent message cannot be discarded or retried; an unknown id is said so.
    again = await run_txc(db, "retry", str(refused_id), "999999999", "--reason", "again")
    assert again.returncode == 1
    assert f"message {refused_id}: is sent, not failed" in again.stderr
    assert "message 999999999: no such message" in again.stderr

    (kept,) = gids(1)
    (kept_id,) = await queue(db.engine, kept)
    gone = await run_txc(db, "discard", str(kept_id), "--reason", "order cancelled by hand")
    assert gone.returncode == 0, gone.stderr
    state = await row(db.engine, kept_id)
    assert state["status"] == "discarded" and "order cancelled by hand" in str(state["last_error"])
    assert (await relay.run_once()).claimed == 0 and r.calls[kept] == 0
    assert (await run_txc(db, "retry", str(kept_id), "--reason", "x")).returncode == 1
    blank = await run_txc(db, "discard", str(kept_id), "--reason", " ")
    assert blank.returncode == 2 and "--reason: is required" in blank.stderr


async def test_retry_all_puts_every_failed_message_back(db: Db, relay_for: Relaying) -> None:
    r, sender = relay_for
    await clear_due(db.engine)
    names = gids(2)
    r.invalid.update(names)
    ids = await queue(db.engine, *names)
    assert (await Relay(db.engine, {START_SAGA: sender}, FAST).run_once()).failed == 2
    done = await run_txc(db, "retry", "--all", "--kind", START_SAGA, "--reason", "fixed")
    assert done.returncode == 0, done.stderr
    async with db.engine.connect() as conn:
        pending = (await conn.execute(select(func.count()).select_from(outbox_table).where(
            outbox_table.c.id.in_(ids), outbox_table.c.status == "pending"))).scalar_one()
    assert pending == 2


def test_bad_command_lines_exit_2() -> None:
    both = subprocess.run([sys.executable, "-m", "coordinator.cli", "outbox", "retry", "1", "--all",
                           "--reason", "x", "--dsn", "postgresql://nobody@127.0.0.1:1/x"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert both.returncode == 2
    bad_dsn = subprocess.run([sys.executable, "-m", "coordinator.cli", "outbox", "list", "--dsn",
                              "nosuch://x"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad_dsn.returncode == 2 and "txc outbox" in bad_dsn.stderr
