"""A PostgreSQL database of this session's own (``txc_conf_<pid>``) on the shared server,
migrated with the SDK's tables, and the two reference participants on it: the Python SDK's
documented accounts service and the Node.js one. Each test gets a fresh account."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, text

from tests.participant.test_docs_example import load_example
from tests.support import databases

from ._services import NOTICES, NodeService, node_modules, python_host

SERVER = databases.SERVERS["postgresql"]


@pytest.fixture(scope="session")
async def pg() -> AsyncIterator[databases.Db]:
    # The business table (balances) is the services' own: each creates it if missing.
    async with databases.migrated("postgresql", SERVER, f"txc_conf_{os.getpid()}", MetaData(),
                                  databases.Db, pool_size=20, max_overflow=10) as made:
        yield made


async def new_account(pg: databases.Db, amount: int = 1_000) -> str:
    account = f"check-{uuid.uuid4().hex[:8]}"
    async with pg.engine.begin() as conn:
        await conn.execute(text("INSERT INTO balances (account, amount) VALUES (:a, :n)"),
                           {"a": account, "n": amount})
    return account


async def balance(pg: databases.Db, account: str) -> int:
    async with pg.engine.connect() as conn:
        found = await conn.execute(text("SELECT amount FROM balances WHERE account = :a"), {"a": account})
        return int(found.scalar_one())


@pytest.fixture
async def python_service(pg: databases.Db, tmp_path: Path) -> AsyncIterator[str]:
    example = load_example(tmp_path)
    async with pg.engine.begin() as conn:
        await conn.run_sync(example.schema.create_all)
        await conn.run_sync(NOTICES.create_all)
    host = python_host(example, pg.engine)
    port = await host.start("127.0.0.1:0")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await host.stop(0)


@pytest.fixture
async def node_service(pg: databases.Db) -> AsyncIterator[str]:
    node_modules()
    service = NodeService(pg.dsn)
    try:
        yield await service.start()  # creates its tables (balances too) if missing
    finally:
        await service.stop()


def scenario(saga: str, two_phase: str, *, notify: bool = False) -> dict[str, object]:
    """The scenario both reference services answer: debits of 1, from one account per
    section (a saga case's leftover cannot show in a 2PC case's balance); with ``notify``,
    settlement notices too (the Python service receives them, the Node one does not)."""
    body: dict[str, object] = {
        "saga": {"action": "accounts.debit", "compensation": "accounts.refund", **_debits(saga)},
        "two_phase": {"operation": "accounts.debit", **_debits(two_phase)}}
    if notify:
        body["notify"] = {"operation": "orders.settled",
                          "observe": {"operation": "orders.noticed", "field": "count"}}
    return body


def _debits(account: str) -> dict[str, object]:
    return {"payload": {"account": account, "amount": 1},
            "refused_payload": {"account": account, "amount": 10**12},
            "observe": {"operation": "accounts.balance", "payload": {"account": account},
                        "field": "balance"}}
