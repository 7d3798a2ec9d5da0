"""What the participant SDK's metrics cost: the same calls through a host with metrics off
and one with metrics on, in alternating rounds, on the real databases.

    .venv/bin/python bench/participant_metrics.py [--calls 300] [--rounds 6] [--db postgresql]

Each round runs ``--calls`` fresh gids through one of two hosts on the same engine: execute,
the same execute again (a duplicate, answered from its barrier row) and compensate, by
``ParticipantHost.handle`` (the path of every gRPC call, minus gRPC), with no-op handlers,
and reads this process's CPU. The two hosts take turns going first. It also times in
process what the metrics add to one such gid (the hooks, on minus off) and one scrape of
the registry: figures the machine's other load does not blur as it blurs the rounds.

A benchmark, not a test: it asserts nothing. Needs PostgreSQL and MariaDB, as
``branch_cpu.py`` does; it creates and drops its own databases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Callable

from _pairs import Round, print_pairs
from branch_cpu import Call, build
from prometheus_client import CollectorRegistry, generate_latest

from coordinator.participant import (
    HostOptions,
    Op,
    Outcome,
    ParticipantHost,
    ParticipantMetrics,
    PrometheusParticipantMetrics,
    create_engine,
    upgrade,
)
from tests.support import databases

CALLS_PER_GID = 3  # execute, its duplicate, compensate


async def one_round(calls: dict[str, Call], n: int, tag: str) -> Round:
    gids = [f"pm-{tag}-{uuid.uuid4().hex[:10]}" for _ in range(n)]
    cpu, wall = time.process_time(), time.perf_counter()
    for gid in gids:
        await calls["execute"](gid)
        await calls["duplicate execute"](gid)
        await calls["compensate"](gid)
    return Round(n / (time.perf_counter() - wall), (time.process_time() - cpu) * 1000 / n)


async def run_on(kind: str, n: int, rounds: int) -> list[tuple[Round, Round]]:
    name = f"txc_pmetrics_{os.getpid()}"
    dsn = await databases.create_database(databases.SERVERS[kind], name)
    engine = create_engine(dsn, pool_size=4, max_overflow=0)
    try:
        await upgrade(engine)
        on = HostOptions(metrics=PrometheusParticipantMetrics(CollectorRegistry()))
        hosts = {"off": build(ParticipantHost(engine)), "on": build(ParticipantHost(engine, on))}
        for mode, calls in hosts.items():  # warm the pool and statement caches untimed
            await one_round(calls, 10, f"warm-{mode}")
        pairs = []
        for r in range(rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            done = {mode: await one_round(hosts[mode], n, f"{r}{mode}") for mode in order}
            pairs.append((done["off"], done["on"]))
        return pairs
    finally:
        await engine.dispose()
        await databases.drop_database(databases.SERVERS[kind], name)


_GID = ((Op.EXECUTE, False), (Op.EXECUTE, True), (Op.COMPENSATE, False))  # (op, duplicate)


def gid_hooks(metrics: ParticipantMetrics) -> None:
    """The metrics calls one gid of a round makes, through the public hooks only: per call
    the host's timing and report; the duplicate's finding. (The barrier holds findings
    until its commit before reporting them: one small object per call, not counted here.)"""
    for op, duplicate in _GID:
        started = time.perf_counter()
        if duplicate:
            metrics.duplicate(op)
        metrics.call(op, Outcome.OK, time.perf_counter() - started)


def no_hooks() -> None:
    """The same loop without metrics code: what the SDK did before it had any."""
    for _op, _duplicate in _GID:
        pass


def per_gid_us(step: Callable[[], object], n: int = 20000) -> float:
    start = time.process_time()
    for _ in range(n):
        step()
    return (time.process_time() - start) / n * 1e6


def hooks_us() -> tuple[float, float, float]:
    """CPU microseconds per gid of the hooks off (against none) and on (against off), and
    per scrape of the registry."""
    registry = CollectorRegistry()
    on, off = PrometheusParticipantMetrics(registry), ParticipantMetrics()
    none_us = per_gid_us(no_hooks)
    off_us = per_gid_us(lambda: gid_hooks(off))
    on_us = per_gid_us(lambda: gid_hooks(on))
    return off_us - none_us, on_us - off_us, per_gid_us(lambda: generate_latest(registry), 200)


def report(kind: str, pairs: list[tuple[Round, Round]], hook_us: float) -> None:
    print(f"\n{kind}: metrics on vs off, gids of 3 calls through two hosts, alternating rounds")
    off_ms = print_pairs(pairs, "gid", "this process's")
    print(f"hooks timed in process: {hook_us:.1f} us CPU per gid = {hook_us / 1000 / off_ms:.2%} "
          f"of {off_ms:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="gids per round (default 300)")
    parser.add_argument("--rounds", type=int, default=6, help="(off, on) pairs (default 6)")
    parser.add_argument("--db", choices=sorted(databases.SERVERS), action="append")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename} {os.cpu_count()} CPUs, "
          f"{args.rounds} x (off, on) rounds of {args.calls} gids x {CALLS_PER_GID} calls, no-op handlers")
    off_us, hook_us, scrape_us = hooks_us()
    print(f"hooks, off minus none: {off_us:.2f} us CPU per gid; on minus off: {hook_us:.2f} us; "
          f"one scrape of the registry (generate_latest): {scrape_us:.0f} us")
    for kind in args.db or sorted(databases.SERVERS):
        report(kind, asyncio.run(run_on(kind, args.calls, args.rounds)), hook_us)


if __name__ == "__main__":
    main()
