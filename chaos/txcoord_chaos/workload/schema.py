"""Tables of the workload. The ledger and orders have no unique key on the transfer id on
purpose: a duplicate effect must be visible to the checker, not prevented by the schema."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, delete, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

accounts_md = MetaData()
accounts = Table(
    "chaos_accounts", accounts_md,
    Column("account", String(32), primary_key=True),
    Column("balance", BigInteger, nullable=False),
)
ledger = Table(
    "chaos_ledger", accounts_md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("transfer_id", String(64), nullable=False, index=True),
    Column("account", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
)

orders_md = MetaData()
orders = Table(
    "chaos_orders", orders_md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("transfer_id", String(64), nullable=False, index=True),
    Column("account", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
)


async def reset_accounts(engine: AsyncEngine, balances: dict[str, int]) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(accounts_md.create_all)
        await conn.execute(delete(ledger))
        await conn.execute(delete(accounts))
        await conn.execute(insert(accounts), [{"account": a, "balance": b}
                                              for a, b in balances.items()])
        await conn.execute(text("DELETE FROM txc_barrier"))


async def reset_orders(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(orders_md.create_all)
        await conn.execute(delete(orders))
        await conn.execute(text("DELETE FROM txc_barrier"))
