"""The complete example in docs/participant.md, run as written against both databases."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from coordinator import ParticipantClient, ppb

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
