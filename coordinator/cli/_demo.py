"""``txc demo``: a coordinator, two example participants and two sagas, end to end.

One saga commits (debit + order); one compensates (the order is refused, so the debit is
refunded). Uses ``--coordinator`` if given, else starts a coordinator on a private etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from .._demo import shop
from .._proto.txc.v1 import coordinator_pb2 as pb
from .._proto.txc.v1 import participant_pb2_grpc as ppb_grpc
from ..client._coordinator import CoordinatorClient, Saga, Step
from ..log import EtcdOptions
from ..server import CoordinatorServer, DevEtcd, ServerOptions
from ..telemetry._logging import setup_logging
from ._common import add_log_flags, defaults_from_env, env_default


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run two example sagas end to end (one commits, one "
                                    "compensates)")
    p.add_argument("--etcd", default=env_default("TXC_ETCD", ""),
                   help="etcd endpoint; default: a private etcd in a temporary folder")
    add_log_flags(p, "warning")
    p.set_defaults(func=run)
    defaults_from_env(p)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    dev = None if args.etcd else DevEtcd().start()
    endpoint = args.etcd or (dev.endpoint if dev else "")
    try:
        return asyncio.run(_demo(endpoint))
    finally:
        if dev is not None:
            dev.cleanup()


@contextlib.asynccontextmanager
async def _participant(servicer: ppb_grpc.ParticipantServicer) -> AsyncIterator[str]:
    server = grpc.aio.server()
    ppb_grpc.add_ParticipantServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0.5)


async def _demo(etcd_endpoint: str) -> int:
    balances = {"alice": 100}
    stock: dict[str, int] = {"book": 1, "lamp": 0}
    placed: list[str] = []
    options = ServerOptions(listen="127.0.0.1:0", etcd=EtcdOptions(endpoints=(etcd_endpoint,)))
    coordinator = CoordinatorServer(options)
    await coordinator.start()
    try:
        async with _participant(shop.accounts(balances)) as acc, \
                _participant(shop.orders(stock, placed)) as orders, \
                CoordinatorClient(f"127.0.0.1:{coordinator.port}") as client:
            print(f"coordinator on 127.0.0.1:{coordinator.port}; accounts at {acc}; "
                  f"orders at {orders}")
            print(f"before: alice has {balances['alice']}, stock {stock}")
            ok = await client.start_saga(_purchase("demo-buy-book", acc, orders, "book"), wait=True)
            _show(ok.transaction)
            bad = await client.start_saga(_purchase("demo-buy-lamp", acc, orders, "lamp"), wait=True)
            _show(bad.transaction)
            print(f"after: alice has {balances['alice']}, stock {stock}, orders {placed}")
            good = (ok.transaction.state == pb.TX_STATE_COMMITTED
                    and bad.transaction.state == pb.TX_STATE_COMPENSATED
                    and balances["alice"] == 70)
            print("demo ok" if good else "demo FAILED")
            return 0 if good else 1
    finally:
        await coordinator.stop(1.0)


def _purchase(gid: str, accounts: str, orders: str, item: str) -> Saga:
    return Saga(gid=gid, steps=[
        Step("debit", accounts, "accounts.debit", "accounts.refund",
             {"account": "alice", "amount": 30}),
        Step("order", orders, "orders.create", "orders.cancel", {"order": gid, "item": item}),
    ])


def _show(tx: pb.Transaction) -> None:
    print(f"saga {tx.gid}: {pb.TxState.Name(tx.state)}" + (f" ({tx.error})" if tx.error else ""))
    for b in tx.branches:
        extra = f" - {b.error}" if b.error else ""
        print(f"  {b.name:8} {pb.BranchState.Name(b.state)}{extra}")
