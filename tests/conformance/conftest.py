"""A PostgreSQL database of this session's own (``txc_conf_<pid>``) on the shared server,
migrated with the SDK's tables, for the Python and Node.js reference participants."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import MetaData

from tests.support import databases

SERVER = databases.SERVERS["postgresql"]


@pytest.fixture(scope="session")
async def pg() -> AsyncIterator[databases.Db]:
    # The business tables are the services' own business (created by them), hence empty.
    async with databases.migrated("postgresql", SERVER, f"txc_conf_{os.getpid()}", MetaData(),
                                  databases.Db, pool_size=20, max_overflow=10) as made:
        yield made


def scenario(account: str) -> dict[str, object]:
    """The scenario both reference services answer: debits of 1 from ``account``."""
    observe = {"operation": "accounts.balance", "payload": {"account": account}, "field": "balance"}
    debit = {"account": account, "amount": 1}
    refused = {"account": account, "amount": 10**12}
    return {
        "saga": {"action": "accounts.debit", "compensation": "accounts.refund", "payload": debit,
                 "refused_payload": refused, "observe": observe},
        "two_phase": {"operation": "accounts.debit", "payload": debit, "refused_payload": refused,
                      "observe": observe},
    }
