"""The two participant services, as users would write them with the SDK.

    python -m txcoord_chaos.workload.services accounts --dsn postgresql+asyncpg://... --listen HOST:PORT
    python -m txcoord_chaos.workload.services orders   --dsn mysql+aiomysql://...    --listen HOST:PORT
    (add --coordinator HOST:PORT to take 2PC branches too, --metrics-listen HOST:PORT to serve
    the SDK's Prometheus metrics)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator import tracer_provider_from_env
from coordinator.participant import (
    BranchContext,
    HostOptions,
    ParticipantHost,
    ParticipantMetrics,
    PrometheusParticipantMetrics,
    Refused,
    TwoPhaseOptions,
    create_engine,
    upgrade,
)
from coordinator.telemetry._metrics import parse_listen

from .schema import accounts, ledger, orders

OUT_OF_STOCK_EVERY = 13  # amounts divisible by this are refused by the order service
INSUFFICIENT_FUNDS = "insufficient funds"
OUT_OF_STOCK = "out of stock"
REFUSALS = (INSUFFICIENT_FUNDS, OUT_OF_STOCK)
"""The business' own refusals: what the workload asks for, whatever the faults."""


@dataclass(frozen=True)
class Transfer:
    transfer_id: str
    account: str
    amount: int

    @classmethod
    def decode(cls, payload: bytes) -> Transfer:
        body = json.loads(payload)
        return cls(str(body["transfer_id"]), str(body["account"]), int(body["amount"]))

    def encode(self) -> bytes:
        return json.dumps({"transfer_id": self.transfer_id, "account": self.account,
                           "amount": self.amount}).encode()


def funds_refusal(balance: int | None, amount: int) -> str | None:
    """The accounts service's rule: no debit beyond the balance (or on no account)."""
    return INSUFFICIENT_FUNDS if balance is None or balance < amount else None


def stock_refusal(amount: int) -> str | None:
    """The order service's rule: some amounts stand for goods that are out of stock."""
    return OUT_OF_STOCK if amount % OUT_OF_STOCK_EVERY == 0 else None


async def debit(conn: AsyncConnection, t: Transfer) -> None:
    """The business rule, shared by the saga handler and the uncoordinated client."""
    row = await conn.execute(select(accounts.c.balance).where(accounts.c.account == t.account)
                             .with_for_update())
    balance = row.scalar_one_or_none()
    refused = funds_refusal(balance, t.amount)
    if refused:
        raise Refused(refused)
    assert balance is not None  # no account: refused above
    await conn.execute(update(accounts).where(accounts.c.account == t.account)
                       .values(balance=balance - t.amount))
    await conn.execute(insert(ledger).values(transfer_id=t.transfer_id, account=t.account,
                                             amount=t.amount))


async def refund(conn: AsyncConnection, t: Transfer) -> None:
    await conn.execute(update(accounts).where(accounts.c.account == t.account)
                       .values(balance=accounts.c.balance + t.amount))
    await conn.execute(delete(ledger).where(ledger.c.transfer_id == t.transfer_id))


async def create_order(conn: AsyncConnection, t: Transfer) -> None:
    refused = stock_refusal(t.amount)
    if refused:
        raise Refused(refused)
    await conn.execute(insert(orders).values(transfer_id=t.transfer_id, account=t.account,
                                             amount=t.amount))


async def cancel_order(conn: AsyncConnection, t: Transfer) -> None:
    await conn.execute(delete(orders).where(orders.c.transfer_id == t.transfer_id))


POOL = 40  # connections per service (pool_size + max_overflow)


def _options(coordinator: str | None, metrics: ParticipantMetrics | None) -> HostOptions:
    # With a coordinator address the host also takes 2PC branches and resolves in-doubt
    # ones. Calls past max_concurrent_rpcs are refused at once (RESOURCE_EXHAUSTED) rather
    # than queued for a pooled connection; prepares use two connections each and may not
    # take more than half of the pool, so phase 2 can always release their locks.
    two_phase = TwoPhaseOptions(coordinator=coordinator, recovery_interval_s=3.0,
                                lock_timeout_s=0.5, max_concurrent_prepares=POOL // 4)
    # A short shutdown grace, like the coordinators' --grace 1: the harness stops the
    # services once their databases have been read, and nothing waits on their calls.
    # Traced when the OTEL_* variables say so (docker-compose.yml sends the spans to Jaeger).
    return HostOptions(call_timeout_s=4.0, max_concurrent_rpcs=POOL, two_phase=two_phase,
                       shutdown_grace_s=1.0, tracer_provider=tracer_provider_from_env(),
                       metrics=metrics or ParticipantMetrics())


Step = Callable[[AsyncConnection, Transfer], Awaitable[None]]


def _host(engine: AsyncEngine, coordinator: str | None, metrics: ParticipantMetrics | None,
          action: str, do: Step, compensation: str, undo: Step) -> ParticipantHost:
    """One service: ``action`` as a saga step (undone by ``compensation``) and, with a
    coordinator for recovery, as the business step of a 2PC branch."""
    host = ParticipantHost(engine, _options(coordinator, metrics))

    async def forward(ctx: BranchContext, conn: AsyncConnection, t: Transfer) -> None:
        await do(conn, t)

    async def backward(ctx: BranchContext, conn: AsyncConnection, t: Transfer) -> None:
        await undo(conn, t)

    host.execute(action, decode=Transfer.decode)(forward)
    host.compensate(compensation, decode=Transfer.decode)(backward)
    if coordinator:
        host.prepare(action, decode=Transfer.decode)(forward)
    return host


def accounts_host(engine: AsyncEngine, coordinator: str | None = None,
                  metrics: ParticipantMetrics | None = None) -> ParticipantHost:
    return _host(engine, coordinator, metrics, "accounts.debit", debit, "accounts.refund", refund)


def orders_host(engine: AsyncEngine, coordinator: str | None = None,
                metrics: ParticipantMetrics | None = None) -> ParticipantHost:
    return _host(engine, coordinator, metrics, "orders.create", create_order, "orders.cancel",
                 cancel_order)


BUILDERS = {"accounts": accounts_host, "orders": orders_host}


def _serve_metrics(listen: str | None) -> ParticipantMetrics | None:
    """The SDK's metrics on /metrics at ``listen`` (a thread of prometheus_client's); None
    (metrics off) without an address."""
    if not listen:
        return None
    registry = CollectorRegistry()
    metrics = PrometheusParticipantMetrics(registry)
    host, port = parse_listen(listen)
    start_http_server(port, host, registry=registry)
    return metrics


async def main(args: argparse.Namespace) -> None:
    engine = create_engine(args.dsn, pool_size=POOL // 2, max_overflow=POOL // 2, pool_timeout=5)
    try:
        await upgrade(engine)
        host = BUILDERS[args.service](engine, args.coordinator, _serve_metrics(args.metrics_listen))
        await host.serve(args.listen)
    finally:
        await engine.dispose()


def build_parser() -> argparse.ArgumentParser:
    """The command line (a function: docker-compose.yml's commands are checked against it)."""
    parser = argparse.ArgumentParser(prog="python -m txcoord_chaos.workload.services")
    parser.add_argument("service", choices=sorted(BUILDERS))
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--coordinator", default=None,
                        help="HOST:PORT for 2PC in-doubt recovery; enables 2PC branches")
    parser.add_argument("--metrics-listen", default=None,
                        help="HOST:PORT to serve the SDK's Prometheus metrics on (/metrics); off by default")
    return parser


if __name__ == "__main__":
    asyncio.run(main(build_parser().parse_args()))
