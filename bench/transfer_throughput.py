"""The chaos harness' money transfer on real databases, without faults: how much a
coordinator costs when the branches do real work.

Debit an account in PostgreSQL, create an order in MariaDB, four ways, one after the
other in one run:

- ``none``: the article's code, two local transactions from the client, nothing tying them;
- ``direct``: the same two steps as calls to the participant services (built on the SDK,
  barrier included), made by the client itself with no coordinator;
- ``saga`` and ``2pc``: through one ``txc serve`` process (private etcd), the services
  taking saga steps and XA / PREPARE TRANSACTION branches.

Prints transfers/s, latency and the CPU each process spent per transfer; the ratios to
``none`` and ``direct`` come from the same run. A benchmark, not a test: it asserts nothing.
Needs PostgreSQL with max_prepared_transactions > 0 and MariaDB (scripts/databases.sh).

    .venv/bin/python bench/transfer_throughput.py [--transfers 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from _cpu import CpuMeter, format_row, servers_by_name
from _load import closed_loop, pct
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from txcoord_chaos.client import CoordinatedClient, Told, UncoordinatedClient
from txcoord_chaos.topology import Databases, Process, ensure_databases, wait_port
from txcoord_chaos.workload.schema import ledger, orders, reset_accounts, reset_orders
from txcoord_chaos.workload.services import OUT_OF_STOCK_EVERY, Transfer

from coordinator import ParticipantClient, ppb
from coordinator.participant import create_engine
from coordinator.rpc.net import free_port
from coordinator.server import DevEtcd

MODES = ("none", "direct", "saga-unary", "saga", "2pc-unary", "2pc")
ACCOUNTS = 2000  # spread over many rows: the figures are about coordination, not row locks
BALANCE = 10**12
TIMEOUT_S = 30.0


class Client(Protocol):
    async def transfer(self, t: Transfer) -> tuple[Told, str]: ...


def plan(prefix: str, count: int, seed: int) -> list[Transfer]:
    """Amounts the order service never refuses: every transfer does the full work."""
    rng = random.Random(seed)
    amounts = [a for a in range(1, 100) if a % OUT_OF_STOCK_EVERY]
    return [Transfer(f"{prefix}{i}", f"acct-{rng.randrange(ACCOUNTS)}", rng.choice(amounts))
            for i in range(count)]


class DirectClient:
    """The saga's two forward steps as plain participant calls, without a coordinator."""

    def __init__(self, accounts: str, orders: str) -> None:
        self._clients = [ParticipantClient(a, timeout_s=TIMEOUT_S) for a in (accounts, orders)]

    async def transfer(self, t: Transfer) -> tuple[Told, str]:
        for client, (branch, op) in zip(self._clients, (("debit", "accounts.debit"),
                                                        ("order", "orders.create")), strict=True):
            reply = await client.call("execute", t.transfer_id, branch, op, t.encode())
            if reply.outcome != ppb.OUTCOME_OK:
                return "failed", reply.message
        return "ok", ""

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


class Bench:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.dbs = Databases(name="txc_bench")
        self.etcd = DevEtcd()
        self.ports = {name: free_port() for name in ("coordinator", "coordinator-unary",
                                                     "accounts", "orders")}
        self.processes: dict[str, Process] = {}
        self.out = out

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    async def start(self) -> None:
        await ensure_databases(self.dbs)
        self.etcd.start()
        py = sys.executable
        coordinator = ["--coordinator", self.address("coordinator")]
        argv = {
            # The same log, two transports: the services call whichever started a transfer.
            **{name: [py, "-m", "coordinator.cli", "serve", "--listen", self.address(name),
                      "--etcd", self.etcd.endpoint, "--log-level", "warning",
                      "--participant-transport", "unary" if name.endswith("unary") else "batch"]
               for name in ("coordinator", "coordinator-unary")},
            "accounts": [py, "-m", "txcoord_chaos.workload.services", "accounts", "--dsn", self.dbs.pg(),
                         "--listen", self.address("accounts"), *coordinator],
            "orders": [py, "-m", "txcoord_chaos.workload.services", "orders", "--dsn", self.dbs.maria(),
                       "--listen", self.address("orders"), *coordinator],
        }
        for name, command in argv.items():
            self.processes[name] = Process(name, command, self.out / f"{name}.log")
            self.processes[name].start()
        for name, port in self.ports.items():
            await wait_port(("127.0.0.1", port), 30.0, name)

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.etcd.cleanup()

    def meter(self) -> CpuMeter:
        def pid_of(name: str) -> Callable[[], list[int]]:
            proc = self.processes[name].proc
            return lambda: [proc.pid] if proc is not None else []

        groups: dict[str, Callable[[], list[int]]] = {n: pid_of(n) for n in self.processes
                                                      if not n.startswith("coordinator")}
        both = [pid_of(n) for n in ("coordinator", "coordinator-unary")]
        groups["coordinator"] = lambda: [pid for ids in both for pid in ids()]
        for server in ("postgresql", "mariadb", "etcd"):
            groups[server] = lambda s=server: servers_by_name().get(s, [])  # type: ignore[misc]
        return CpuMeter(groups)


async def run_modes(bench: Bench, args: argparse.Namespace) -> None:
    pg = create_engine(bench.dbs.pg(), pool_size=args.concurrency, max_overflow=0)
    maria = create_engine(bench.dbs.maria(), pool_size=args.concurrency, max_overflow=0)
    clients: dict[str, Client] = {
        "none": UncoordinatedClient(pg, maria, TIMEOUT_S),
        "direct": DirectClient(bench.address("accounts"), bench.address("orders")),
    }
    for mode in ("saga", "2pc"):
        for suffix, coordinator in (("", "coordinator"), ("-unary", "coordinator-unary")):
            clients[mode + suffix] = CoordinatedClient(
                [bench.address(coordinator)], bench.address("accounts"), bench.address("orders"),
                mode, TIMEOUT_S)
    balances = {f"acct-{i}": BALANCE for i in range(ACCOUNTS)}
    rates: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    try:
        for mode in args.modes.split(","):
            client = clients[mode]
            await reset_accounts(pg, balances)
            await reset_orders(maria)

            async def one(t: Transfer, client: Client = client) -> Told:
                return (await client.transfer(t))[0]

            prefix = f"{mode}-{args.run}-"
            _, _, warm_told = await closed_loop(plan(prefix + "w", args.concurrency * 4, args.seed),
                                                args.concurrency, one)
            warm = Counter(warm_told)
            meter = bench.meter()
            meter.start()
            rate, lat, results = await closed_loop(plan(prefix, args.transfers, args.seed),
                                                   args.concurrency, one)
            told = Counter(results)
            cpu[mode] = meter.ms_per(args.transfers)
            rates[mode] = rate
            print(f"{mode:<10} {rate:8.0f} transfers/s  p50 {pct(lat, 50) * 1000:7.2f} ms  "
                  f"p99 {pct(lat, 99) * 1000:7.2f} ms  told {dict(told)}  "
                  f"{await effects(pg, maria, warm['ok'] + told['ok'])}", flush=True)
    finally:
        for c in clients.values():
            if isinstance(c, CoordinatedClient | DirectClient):
                await c.close()
        await pg.dispose()
        await maria.dispose()
    report(rates, cpu)


async def effects(pg: AsyncEngine, maria: AsyncEngine, ok: int) -> str:
    """Every transfer told ok must show its debit and its order (the tables were emptied
    before this mode): a throughput bought with lost effects would be no figure at all."""
    async with pg.connect() as conn:
        debits = (await conn.execute(select(func.count()).select_from(ledger))).scalar_one()
    async with maria.connect() as conn:
        placed = (await conn.execute(select(func.count()).select_from(orders))).scalar_one()
    verdict = "consistent" if debits == placed == ok else "INCONSISTENT"
    return f"{verdict} ({debits} debits, {placed} orders, {ok} ok)"


def report(rates: dict[str, float], cpu: dict[str, dict[str, float]]) -> None:
    for base in ("none", "direct"):
        if base in rates:
            ratios = "  ".join(f"{m} {r / rates[base]:6.1%}" for m, r in rates.items() if m != base)
            print(f"ratio to {base:<7} {ratios}")
    names = ["load generator", "coordinator", "accounts", "orders", "postgresql", "mariadb",
             "etcd", "machine"]
    print("\nCPU ms per transfer (machine = every process, both cores)")
    print(format_row("", {}, []) + "".join(f"{n[:9]:>10}" for n in names))
    for mode, ms in cpu.items():
        print(format_row(mode, ms, names))


async def main(args: argparse.Namespace, out: Path) -> None:
    bench = Bench(args, out)
    try:
        await bench.start()
        print(f"transfers={args.transfers} concurrency={args.concurrency} accounts={ACCOUNTS} "
              f"(PostgreSQL debit + MariaDB order; logs in {out})", flush=True)
        await run_modes(bench, args)
    finally:
        bench.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfers", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="/tmp/txc-bench")
    parser.add_argument("--run", default=str(int(time.time())))
    arguments = parser.parse_args()
    Path(arguments.out).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(arguments, Path(arguments.out)))
