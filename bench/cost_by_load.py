"""What a no-op saga costs each process as the load grows: closed loops of 1, 2, 4, ...
sagas in flight through one coordinator (batch transport), and per level the rate, p50 /
p99, the etcd requests per saga and the CPU milliseconds per saga of the coordinator, the
participant, etcd and this load generator.

Beside each level, a baseline from the same run that has no coordinator in it: the same
number of etcd puts in flight from this process (etcd3aio, as the coordinator's log uses
it), and the CPU this process spends per put. A gRPC call costs a Python process several
times more CPU when it goes alone than when calls share wake-ups; the baseline shows how
much of the coordinator's curve is that. A benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/cost_by_load.py [--levels 1,2,4,8,16,64] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass

import etcd3aio
from _cpu import process_seconds
from _load import closed_loop, pct
from _noop_world import noop_world
from saga_throughput import _saga, etcd_requests

from coordinator import CoordinatorClient
from coordinator.server import DevEtcd


@dataclass(frozen=True)
class Level:
    in_flight: int
    rate: float
    p50_ms: float
    p99_ms: float
    etcd_requests: float  # per saga
    cpu_ms: dict[str, float]  # per saga, by process
    put_rate: float  # the baseline: etcd puts from this process, as many in flight
    put_cpu_ms: float  # this process's CPU per put


def _self_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def _sagas(client: CoordinatorClient, participant: str, level: int, count: int,
                 pids: dict[str, int], etcd: DevEtcd, tag: str) -> Level:
    async def one(i: int) -> None:
        await client.start_saga(_saga(participant, f"{tag}-{level}-{i}"), wait=True)

    cpu = {name: process_seconds(pid) for name, pid in pids.items()}
    mine, requests = _self_seconds(), etcd_requests(etcd)
    rate, latencies, _ = await closed_loop(range(count), level, one)
    spent = {name: (process_seconds(pid) - cpu[name]) * 1000 / count for name, pid in pids.items()}
    spent["load generator"] = (_self_seconds() - mine) * 1000 / count
    return Level(level, rate, pct(latencies, 50) * 1000, pct(latencies, 99) * 1000,
                 (etcd_requests(etcd) - requests) / count, spent, 0.0, 0.0)


async def _puts(kv: etcd3aio.kv.KVService, level: int, count: int, tag: str) -> tuple[float, float]:
    async def one(i: int) -> None:
        await kv.put(f"/bench-puts/{tag}/{level}/{i}", "x" * 200)

    mine = _self_seconds()
    rate, _, _ = await closed_loop(range(count), level, one)
    return rate, (_self_seconds() - mine) * 1000 / count


async def measure(args: argparse.Namespace, etcd: DevEtcd, participant: str,
                  coordinator: str, pids: dict[str, int]) -> list[Level]:
    etcd_client = etcd3aio.Etcd3Client([etcd.endpoint])
    await etcd_client.connect()
    kv = etcd_client.kv
    if kv is None:
        raise RuntimeError(f"etcd at {etcd.endpoint}: no KV service after connecting")
    levels = []
    async with CoordinatorClient(coordinator, timeout_s=60) as client:
        await client.start_saga(_saga(participant, f"warm-{args.run}"), wait=True)
        for level in args.levels:
            # Sized from a short probe, so that every level runs about --seconds.
            probe = await _sagas(client, participant, level, max(20, level * 4), pids, etcd,
                                 f"p{args.run}")
            count = max(level * 4, int(probe.rate * args.seconds))
            measured = await _sagas(client, participant, level, count, pids, etcd, args.run)
            put_rate, put_cpu = await _puts(kv, level, count, args.run)
            levels.append(Level(**{**measured.__dict__, "put_rate": put_rate,
                                   "put_cpu_ms": put_cpu}))
    await etcd_client.close()
    return levels


def report(levels: list[Level]) -> None:
    names = ("coordinator", "participant", "etcd", "load generator")
    print("no-op sagas (2 branches, batch transport) through one coordinator, closed loops")
    print(f"{'in flight':>9}{'sagas/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'etcd req':>9}"
          + "".join(f"{n[:11]:>12}" for n in names) + f"{'puts/s':>9}{'put CPU':>9}")
    for lv in levels:
        print(f"{lv.in_flight:>9}{lv.rate:>9.0f}{lv.p50_ms:>8.1f}{lv.p99_ms:>8.1f}"
              f"{lv.etcd_requests:>9.2f}" + "".join(f"{lv.cpu_ms[n]:>12.2f}" for n in names)
              + f"{lv.put_rate:>9.0f}{lv.put_cpu_ms:>9.3f}")
    print("CPU columns: ms per saga; put CPU: this process's ms per etcd put, as many in flight")
    lone, busiest = levels[0], levels[-1]
    print(f"coordinator CPU per saga, {lone.in_flight} in flight ÷ {busiest.in_flight}: "
          f"{lone.cpu_ms['coordinator'] / busiest.cpu_ms['coordinator']:.1f}x; "
          f"an etcd put's client CPU, the same: {lone.put_cpu_ms / busiest.put_cpu_ms:.1f}x")


def main(args: argparse.Namespace) -> None:
    with noop_world("/bench/cost") as world:
        report(asyncio.run(measure(args, world.etcd, world.participant, world.coordinator,
                                   world.pids)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 2, 4, 8, 16, 64], help="sagas in flight, comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0, help="about how long each level runs")
    parser.add_argument("--run", default=str(int(time.time())))
    main(parser.parse_args())
