"""Saga and 2PC throughput and latency through one coordinator, against a no-coordinator
baseline.

Everything runs on this machine: a private etcd, a no-op participant process, one
``txc serve`` process and this load generator. Prints sagas/s, p50/p99 latency, etcd
requests per saga and the coordinator's memory, beside the baseline (the same two
participant calls made directly, no coordinator) from the same run. A benchmark, not a
test: it asserts nothing.

    .venv/bin/python bench/saga_throughput.py [--sagas 4000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _cpu import CpuMeter, format_row
from _load import closed_loop, pct

from coordinator import CoordinatorClient, ParticipantClient, Saga, Step, TwoPhase
from coordinator.net import free_port
from coordinator.server import DevEtcd

HERE = Path(__file__).resolve().parent


def etcd_requests(etcd: DevEtcd) -> int:
    text = urllib.request.urlopen(f"http://{etcd.endpoint}/metrics").read().decode()
    total = 0
    for m in re.finditer(r'^grpc_server_handled_total\{[^}]*grpc_method="(\w+)"[^}]*\} (\S+)$',
                         text, re.M):
        if m.group(1) in ("Txn", "Put", "DeleteRange", "Range"):
            total += int(float(m.group(2)))
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def open_loop(rate: float, seconds: float, one: object) -> list[float]:
    latencies: list[float] = []

    async def timed(i: int) -> None:
        t0 = time.perf_counter()
        await one(i)  # type: ignore[operator]
        latencies.append(time.perf_counter() - t0)

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(timed(i)))
    await asyncio.gather(*tasks)
    return latencies


def run(args: argparse.Namespace) -> None:
    etcd = DevEtcd().start()
    pport, cport = free_port(), free_port()
    participant = subprocess.Popen([sys.executable, str(HERE / "noop_participant.py"), str(pport)])
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve", "--listen", f"127.0.0.1:{cport}",
         "--etcd", etcd.endpoint, "--log-level", "warning"])
    try:
        time.sleep(1.5)
        meter = CpuMeter({"coordinator": lambda: [coordinator.pid],
                          "participant": lambda: [participant.pid],
                          "etcd": lambda: [etcd.process.pid] if etcd.process else []})
        asyncio.run(measure(args, etcd, f"127.0.0.1:{pport}", cport, coordinator.pid, meter))
    finally:
        coordinator.terminate()
        participant.terminate()
        coordinator.wait()
        participant.wait()
        etcd.cleanup()


async def measure(args: argparse.Namespace, etcd: DevEtcd, address: str, cport: int,
                  coordinator_pid: int, meter: CpuMeter) -> None:
    participant = ParticipantClient(address)

    async def direct(i: int) -> None:
        for b in ("a", "b"):
            await participant.call("execute", f"d{i}", b, f"{b}.do")

    async with CoordinatorClient(f"127.0.0.1:{cport}", timeout_s=60) as client:
        await client.start_saga(_saga(address, "warm"), wait=True)

        async def through(i: int) -> None:
            await client.start_saga(_saga(address, f"s{args.run}-{i}"), wait=True)

        async def two_phase(i: int) -> None:
            await client.start_two_phase(_two_phase(address, f"t{args.run}-{i}"), wait=True)

        cpu: dict[str, dict[str, float]] = {}
        meter.start()
        base_rate, base_lat, _ = await closed_loop(range(args.sagas), args.concurrency, direct)
        cpu["baseline"] = meter.ms_per(args.sagas)
        before = etcd_requests(etcd)
        meter.start()
        rate, lat, _ = await closed_loop(range(args.sagas), args.concurrency, through)
        cpu["saga"] = meter.ms_per(args.sagas)
        per_saga = (etcd_requests(etcd) - before) / args.sagas
        rss_after = rss_mb(coordinator_pid)
        half = await open_loop(rate / 2, args.half_seconds, through)
        before = etcd_requests(etcd)
        meter.start()
        tp_rate, tp_lat, _ = await closed_loop(range(args.sagas), args.concurrency, two_phase)
        cpu["2pc"] = meter.ms_per(args.sagas)
        per_tp = (etcd_requests(etcd) - before) / args.sagas
    await participant.close()
    _report(args, base_rate, base_lat, rate, lat, per_saga, half, rss_after)
    ms = 1000.0
    print(f"2PC via coordinator:       {tp_rate:8.0f} tx/s         p50 {pct(tp_lat, 50)*ms:6.2f} ms"
          f"  p99 {pct(tp_lat, 99)*ms:6.2f} ms")
    print(f"2PC ratio to baseline:     {tp_rate / base_rate:8.1%}   to saga: {tp_rate / rate:.1%}")
    print(f"etcd requests per 2PC tx:  {per_tp:8.2f}")
    names = ["load generator", "coordinator", "participant", "etcd", "machine"]
    print("\nCPU ms per transaction (machine = every process, both cores)")
    print(format_row("", {}, []) + "".join(f"{n[:9]:>10}" for n in names))
    for label, spent in cpu.items():
        print(format_row(label, spent, names))


def _saga(address: str, gid: str) -> Saga:
    return Saga([Step("a", address, "a.do", "a.undo"), Step("b", address, "b.do", "b.undo")],
                gid=gid)


def _two_phase(address: str, gid: str) -> TwoPhase:
    return TwoPhase([Step(n, address, f"{n}.do") for n in ("a", "b")], gid=gid)



def _report(args: argparse.Namespace, base_rate: float, base_lat: list[float], rate: float,
            lat: list[float], per_saga: float, half: list[float], rss: float) -> None:
    ms = 1000.0
    print(f"sagas={args.sagas} concurrency={args.concurrency} (2 branches, no-op participants)")
    print(f"baseline (no coordinator): {base_rate:8.0f} transfers/s  p50 {pct(base_lat, 50)*ms:6.2f} ms"
          f"  p99 {pct(base_lat, 99)*ms:6.2f} ms")
    print(f"saga via coordinator:      {rate:8.0f} sagas/s      p50 {pct(lat, 50)*ms:6.2f} ms"
          f"  p99 {pct(lat, 99)*ms:6.2f} ms")
    print(f"ratio to baseline:         {rate / base_rate:8.1%}")
    print(f"at half max rate ({rate/2:.0f}/s): p50 {pct(half, 50)*ms:.2f} ms  "
          f"p99 {pct(half, 99)*ms:.2f} ms")
    print(f"etcd requests per saga:    {per_saga:8.2f}")
    print(f"coordinator RSS after run: {rss:8.1f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sagas", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--half-seconds", type=float, default=5.0)
    parser.add_argument("--run", default=str(int(time.time())))
    run(parser.parse_args())
