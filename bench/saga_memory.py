"""Coordinator memory with many sagas in flight, and over a long steady run.

    .venv/bin/python bench/saga_memory.py --in-flight 10000          # RSS with 10k in flight
    .venv/bin/python bench/saga_memory.py --steady-seconds 600       # RSS every 30 s at a
                                                                     # steady rate
A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from coordinator import CoordinatorClient, Saga, Step
from coordinator.rpc.net import free_port
from coordinator.server import DevEtcd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from saga_throughput import rss_mb  # noqa: E402


def saga(address: str, gid: str) -> Saga:
    return Saga([Step("a", address, "a.do", "a.undo"), Step("b", address, "b.do", "b.undo")],
                gid=gid, timeout_s=600)


async def in_flight(client: CoordinatorClient, address: str, n: int, pid: int) -> None:
    base = rss_mb(pid)
    sem = asyncio.Semaphore(256)

    async def start(i: int) -> None:
        async with sem:
            await client.start_saga(saga(address, f"m{time.time_ns()}-{i}"))

    t0 = time.perf_counter()
    await asyncio.gather(*(start(i) for i in range(n)))
    print(f"started {n} sagas in {time.perf_counter() - t0:.1f}s; coordinator RSS "
          f"{base:.0f} MB before, {rss_mb(pid):.0f} MB with them in flight")


async def steady(client: CoordinatorClient, address: str, seconds: float, rate: float,
                 pid: int) -> None:
    start, i, last = time.perf_counter(), 0, 0.0
    tasks: set[asyncio.Task[object]] = set()
    while (now := time.perf_counter() - start) < seconds:
        task = asyncio.create_task(client.start_saga(saga(address, f"s{start}-{i}"), wait=True))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        if now - last >= 30:
            print(f"t={now:5.0f}s sagas={i:7d} coordinator RSS {rss_mb(pid):6.1f} MB", flush=True)
            last = now
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    print(f"end: sagas={i} coordinator RSS {rss_mb(pid):.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--in-flight", type=int, default=0)
    parser.add_argument("--steady-seconds", type=float, default=0)
    parser.add_argument("--rate", type=float, default=150)
    args = parser.parse_args()
    etcd = DevEtcd().start()
    pport, cport = free_port(), free_port()
    delay = "120" if args.in_flight else "0"
    participant = subprocess.Popen([sys.executable, str(HERE / "noop_participant.py"),
                                    str(pport), delay])
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve", "--listen", f"127.0.0.1:{cport}",
         "--etcd", etcd.endpoint, "--log-level", "warning", "--grace", "0"])
    try:
        time.sleep(1.5)
        asyncio.run(_run(args, f"127.0.0.1:{pport}", cport, coordinator.pid))
    finally:
        coordinator.terminate()
        participant.terminate()
        coordinator.wait()
        participant.wait()
        etcd.cleanup()


async def _run(args: argparse.Namespace, address: str, cport: int, pid: int) -> None:
    async with CoordinatorClient(f"127.0.0.1:{cport}", timeout_s=60) as client:
        if args.in_flight:
            await in_flight(client, address, args.in_flight, pid)
        if args.steady_seconds:
            await steady(client, address, args.steady_seconds, args.rate, pid)


if __name__ == "__main__":
    main()
