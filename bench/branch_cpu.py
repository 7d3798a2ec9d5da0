"""CPU of one participant branch in the SDK, in process, on the real databases.

Calls ``ParticipantHost.handle`` (the path every gRPC call takes, minus gRPC) N times in a
row for each kind of call, with a no-op handler, so the figures are the SDK's own cost:
barrier or 2PC statements, session handling, SQLAlchemy and driver. Prints CPU ms and wall
ms per call for each database; the database servers' CPU is not included.

    .venv/bin/python bench/branch_cpu.py [--calls 300] [--profile execute.html]

A benchmark, not a test: it asserts nothing. Needs PostgreSQL (max_prepared_transactions
> 0 for the 2PC rows) and MariaDB, as the SDK tests do; it creates and drops its own
databases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator import ppb
from coordinator.participant import BranchContext, Op, ParticipantHost, create_engine, upgrade
from tests.support import databases

Call = Callable[[str], Awaitable[None]]


class TripCounter:
    """A loopback TCP relay in front of the database that counts the client's writes: each
    is a request the SDK waits on (the drivers do not pipeline), i.e. a round trip."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.writes = 0

    async def start(self) -> int:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            while data := await src.read(65536):
                self.writes += count
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False),
                             return_exceptions=True)


def request(gid: str, operation: str, op: str) -> ppb.BranchRequest:
    return ppb.BranchRequest(gid=gid, branch="b1", operation=operation, payload=b"{}",
                             idempotency_key=f"{gid}/b1/{op}", attempt=1)


def build(host: ParticipantHost) -> dict[str, Call]:
    async def noop(ctx: BranchContext, conn: AsyncConnection, payload: bytes) -> bytes:
        return b""

    host.execute("noop")(noop)
    host.compensate("noop")(noop)
    host.prepare("noop")(noop)

    async def call(op: Op, gid: str) -> None:
        reply = await host.handle(op, request(gid, "noop", op.value))
        if reply.outcome != ppb.OUTCOME_OK:
            raise RuntimeError(f"{op} {gid}: {reply.message}")

    async def execute(gid: str) -> None:
        await call(Op.EXECUTE, gid)

    async def compensate(gid: str) -> None:
        await call(Op.COMPENSATE, gid)

    async def prepare_commit(gid: str) -> None:
        await call(Op.PREPARE, gid)
        await call(Op.COMMIT, gid)

    # Each kind runs on gids prepared for it: compensate undoes an execute that ran, the
    # duplicate repeats one.
    return {"execute": execute, "duplicate execute": execute, "compensate": compensate,
            "prepare+commit": prepare_commit}


async def measure(calls: dict[str, Call], n: int,
                  trips: TripCounter | None = None) -> dict[str, tuple[float, float, float]]:
    gids = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    figures: dict[str, tuple[float, float, float]] = {}
    for name, fn in calls.items():
        batch = gids if name != "prepare+commit" else [f"{g}-2pc" for g in gids]
        for gid in batch[:10]:  # warm the pool and statement caches outside the timing
            await fn(f"warm-{gid}-{name[:3]}")
        writes = trips.writes if trips else 0
        cpu, wall = time.process_time(), time.perf_counter()
        for gid in batch:
            await fn(gid)
        figures[name] = ((time.process_time() - cpu) * 1000 / n, (time.perf_counter() - wall) * 1000 / n,
                         ((trips.writes - writes) / n) if trips else float("nan"))
    return figures


async def run_on(kind: str, n: int, profile: str | None, count_trips: bool) -> None:
    name = f"txc_branchcpu_{os.getpid()}"
    dsn = await databases.create_database(databases.SERVERS[kind], name)
    trips = None
    if count_trips:  # the relay's own CPU is in this process: time without it
        url = make_url(dsn)
        trips = TripCounter(url.port or 0)
        dsn = url.set(host="127.0.0.1", port=await trips.start()).render_as_string(hide_password=False)
    engine = create_engine(dsn, pool_size=4, max_overflow=0)
    try:
        await upgrade(engine)
        calls = build(ParticipantHost(engine))
        if profile:
            await _profiled(calls, n, f"{kind}-{profile}")
            return
        for name_, (cpu, wall, writes) in (await measure(calls, n, trips)).items():
            if trips:
                print(f"{kind:<11} {name_:<18} {writes:5.2f} round trips/call")
            else:
                print(f"{kind:<11} {name_:<18} {cpu:7.3f} CPU ms/call {wall:7.3f} wall ms/call")
    finally:
        await engine.dispose()
        await databases.drop_database(databases.SERVERS[kind], name)


async def _profiled(calls: dict[str, Call], n: int, path: str) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002, async_mode="enabled")
    profiler.start()
    await measure(calls, n)
    profiler.stop()
    _save(path, profiler.output_html())
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def _save(path: str, text: str) -> None:
    Path(path).write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per kind (default 300)")
    parser.add_argument("--db", choices=sorted(databases.SERVERS), action="append")
    parser.add_argument("--profile", help="write a pyinstrument profile to DB-PROFILE instead")
    parser.add_argument("--count-trips", action="store_true",
                        help="count round trips to the database (through a relay) instead of timing")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename} {os.cpu_count()} CPUs, "
          f"{args.calls} sequential calls per kind, no-op handler")
    for kind in args.db or sorted(databases.SERVERS):
        asyncio.run(run_on(kind, args.calls, args.profile, args.count_trips))


if __name__ == "__main__":
    main()
