"""The Python SDK's documented accounts service (docs/participant.md), with the 2PC debit
of its section 7 and a balance to observe, conforms: every case passes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator._conformance import check, parse_scenario
from coordinator.participant import BranchContext, Refused
from tests.participant.test_docs_example import load_example
from tests.support import databases

from .conftest import scenario

pytestmark = pytest.mark.integration


def serve_example(example: Any, pg: databases.Db) -> Any:
    host = example.build(pg.engine)
    balances, transfer = example.balances, example.Transfer

    @host.prepare("accounts.debit", decode=transfer.decode)
    async def debit(ctx: BranchContext, conn: AsyncConnection, t: Any) -> bytes:
        found = await conn.execute(select(balances.c.amount).where(balances.c.account == t.account)
                                   .with_for_update())
        balance = found.scalar_one_or_none()
        if balance is None or balance < t.amount:
            raise Refused("insufficient funds")
        await conn.execute(balances.update().where(balances.c.account == t.account)
                           .values(amount=balance - t.amount))
        return b""

    @host.execute("accounts.balance", decode=json.loads)
    async def balance(ctx: BranchContext, conn: AsyncConnection, body: dict[str, str]) -> bytes:
        found = await conn.execute(select(balances.c.amount).where(balances.c.account == body["account"]))
        return json.dumps({"balance": found.scalar_one()}).encode()

    return host


@pytest.fixture
async def python_service(pg: databases.Db, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    example = load_example(tmp_path)
    async with pg.engine.begin() as conn:
        await conn.run_sync(example.schema.create_all)
        account = f"check-{uuid.uuid4().hex[:8]}"
        await conn.execute(example.balances.insert().values(account=account, amount=1_000))
    host = serve_example(example, pg)
    port = await host.start("127.0.0.1:0")
    try:
        yield f"127.0.0.1:{port}", account
    finally:
        await host.stop(0)


async def test_the_python_sdk_example_conforms(python_service: tuple[str, str]) -> None:
    address, account = python_service
    report = await check(address, parse_scenario(scenario(account)))
    assert report.passed, report.to_text()
    assert {c.status for c in report.cases} == {"pass"}, report.to_text()
    assert not any(c.notes for c in report.cases), report.to_text()  # every effect was checked
    # Runs repeat: a second run uses fresh gids and passes as well.
    again = await check(address, parse_scenario(scenario(account)))
    assert again.passed, again.to_text()
