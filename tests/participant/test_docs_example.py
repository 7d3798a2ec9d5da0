"""The complete example in docs/participant.md, run as written against both databases."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from coordinator import ParticipantClient, ppb
from coordinator.rpc.net import free_port

from .conftest import Db

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "participant.md"


def load_example(tmp_path: Path) -> ModuleType:
    text = DOC.read_text()
    found = re.search(r"<!-- example: accounts -->\n```python\n(.*?)```", text, re.S)
    assert found, "the accounts example is missing from docs/participant.md"
    path = tmp_path / "accounts_example.py"
    path.write_text(found.group(1))
    spec = importlib.util.spec_from_file_location("accounts_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["accounts_example"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def test_accounts_example_debits_refunds_and_refuses(db: Db, tmp_path: Path) -> None:
    example = load_example(tmp_path)
    async with db.engine.begin() as conn:
        await conn.run_sync(example.schema.create_all)
        await conn.execute(example.balances.delete())
        await conn.execute(example.balances.insert().values(account="alice", amount=100))
    host = example.build(db.engine)
    port = await host.start("127.0.0.1:0")
    client = ParticipantClient(f"127.0.0.1:{port}", timeout_s=10)

    async def call(method: str, gid: str, operation: str, body: object) -> ppb.BranchReply:
        payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
        return await client.call(method.lower(), gid, "debit", operation, payload)

    try:
        alice30 = {"account": "alice", "amount": 30}
        ok = await call("Execute", "order-1", "accounts.debit", alice30)
        assert ok.outcome == ppb.OUTCOME_OK and json.loads(ok.result) == {"balance": 70}
        assert await call("Execute", "order-1", "accounts.debit", alice30) == ok
        undo = await call("Compensate", "order-1", "accounts.refund", alice30)
        assert undo.outcome == ppb.OUTCOME_OK
        poor = await call("Execute", "order-2", "accounts.debit", {"account": "alice", "amount": 500})
        assert (poor.outcome, poor.message) == (ppb.OUTCOME_FAILED, "insufficient funds")
        # Compensating the refused debit is a no-op: no money appears.
        assert (await call("Compensate", "order-2", "accounts.refund",
                           {"account": "alice", "amount": 500})).outcome == ppb.OUTCOME_OK
        bad = await call("Execute", "order-3", "accounts.debit", b"not json")
        assert bad.outcome == ppb.OUTCOME_FAILED and "cannot be decoded" in bad.message
        async with db.engine.connect() as conn:
            amount = (await conn.execute(example.balances.select())).one().amount
        assert amount == 100
    finally:
        await client.close()
        await host.stop(0)


README = DOC.parents[1] / "README.md"


def readme_participant(dsn: str, port: int) -> str:
    """The README's participant snippet, on ``dsn`` and ``port``."""
    found = re.search(r"## A participant in a few lines.*?```python\n(.*?)```", README.read_text(), re.S)
    assert found, "the participant snippet is missing from README.md"
    code = found.group(1)
    for needle, value in (("postgresql+asyncpg://accounts@db/accounts", dsn),
                          ('"[::]:7001"', f'"127.0.0.1:{port}"')):
        assert needle in code, needle
        code = code.replace(needle, value)
    return code


async def test_the_readme_participant_serves_and_stops_cleanly_on_sigterm(db: Db, tmp_path: Path) -> None:
    """On MariaDB, a pool left open printed ``Event loop is closed`` at exit; the snippet
    also names the coordinator its 2PC recovery asks (no warning at start)."""
    port = free_port()
    script = tmp_path / "readme_participant.py"
    script.write_text(readme_participant(db.dsn, port))
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script),
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with ParticipantClient(f"127.0.0.1:{port}", timeout_s=1) as client:
            for _ in range(100):
                try:
                    listed = await client.operations()
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the README participant did not start")
        assert list(listed.execute) == ["accounts.debit"] and list(listed.prepare) == ["accounts.debit"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert err.decode() == "", err.decode()  # no traceback, no 2PC recovery warning


def test_migrate_help_names_every_table() -> None:
    out = subprocess.run([sys.executable, "-m", "coordinator.cli", "migrate", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert all(t in out for t in ("txc_barrier", "txc_outbox", "txc_xa"))
