"""Takeover time after SIGKILL, and false takeovers under a short stop, with default settings.

Two ``txc serve`` processes (default lease) share a private etcd; a participant in this
process answers each Execute after a delay, so sagas are in flight on the first one.
- kill: SIGKILL the coordinator driving them; the figure is the time from the kill to the
  first call the survivor makes for them (orphan resumed).
- stop: SIGSTOP it for ``--stop`` seconds, then SIGCONT; a takeover there is false (the
  coordinator was alive); counted from the survivor's log.
A benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/takeover.py [--rounds 5] [--stop 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from txcoord_chaos.topology import wait_port

from coordinator import CoordinatorClient, Retry, Saga, Step, ppb, ppb_grpc
from coordinator.rpc.net import free_port
from coordinator.server import Context, DevEtcd


class Slow(ppb_grpc.ParticipantServicer):
    """Answers every call OK after ``delay_s`` (holds sagas in flight)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def Execute(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        await asyncio.sleep(self.delay_s)
        return ppb.BranchReply(outcome=ppb.OUTCOME_OK)

    Compensate = Prepare = Commit = Abort = Execute

    async def Operations(self, request: ppb.OperationsRequest,
                         context: Context) -> ppb.OperationsReply:
        """Any name is served: no list, no check of starts."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "serves any operation name")
        raise AssertionError("unreachable: abort raises")

    async def Batch(self, requests: AsyncIterator[ppb.BranchCallBatch],
                    context: Context) -> AsyncIterator[ppb.BranchResultBatch]:
        """Unary only (the coordinator falls back): takeover does not depend on transport."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unary calls only")
        yield ppb.BranchResultBatch()  # never reached: abort raises


def serve(etcd: DevEtcd, port: int, log: Path, prefix: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "coordinator.cli", "serve", "--listen",
                             f"127.0.0.1:{port}", "--etcd", etcd.endpoint, "--prefix", prefix],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def claims(log: Path) -> list[float]:
    """Wall-clock times of the "claimed orphan" lines of a coordinator's log."""
    found = []
    for line in log.read_text().splitlines():
        if "claimed orphan" in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            found.append(stamp.timestamp())
    return found


async def one_round(etcd: DevEtcd, p: Slow, address: str, tmp: Path, n: int,
                    mode: str, stop_s: float) -> float | bool:
    ports = (free_port(), free_port())
    logs = (tmp / f"{mode}-{n}-a.log", tmp / f"{mode}-{n}-b.log")
    prefix = f"/takeover/{mode}-{n}"  # a round of its own: no orphans of earlier rounds
    first, second = (serve(etcd, ports[0], logs[0], prefix), serve(etcd, ports[1], logs[1], prefix))
    try:
        for port in ports:
            await wait_port(("127.0.0.1", port), 60, "coordinator")
        async with CoordinatorClient(f"127.0.0.1:{ports[0]}") as c:
            for i in range(10):
                await c.start_saga(Saga([Step("a", address, "a.do", retry=Retry(max_attempts=0)),
                                         Step("b", address, "b.do")], gid=f"{mode}-{n}-{i}"))
        await asyncio.sleep(0.2)  # every saga's first call is in flight
        if mode == "kill":
            killed = time.time()
            first.send_signal(signal.SIGKILL)
            for _ in range(200):
                await asyncio.sleep(0.1)
                if claims(logs[1]):
                    return min(claims(logs[1])) - killed
            raise RuntimeError("no takeover within 20 s")
        first.send_signal(signal.SIGSTOP)
        await asyncio.sleep(stop_s)
        first.send_signal(signal.SIGCONT)
        await asyncio.sleep(p.delay_s * 3)
        return bool(claims(logs[1]))
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait()


async def main(args: argparse.Namespace) -> None:
    etcd = DevEtcd().start()
    p = Slow(delay_s=args.delay)
    server = grpc.aio.server()
    ppb_grpc.add_ParticipantServicer_to_server(p, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kills = [await one_round(etcd, p, address, Path(tmp), n, "kill", args.stop)
                     for n in range(args.rounds)]
            stops = [await one_round(etcd, p, address, Path(tmp), n, "stop", args.stop)
                     for n in range(args.rounds)]
    finally:
        await server.stop(0)
        etcd.cleanup()
    times = [float(k) for k in kills]
    print(f"takeover after SIGKILL (default lease), {args.rounds} rounds: median "
          f"{statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s")
    print(f"false takeovers under a {args.stop:.1f} s SIGSTOP: {sum(map(bool, stops))} of "
          f"{len(stops)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stop", type=float, default=2.0)
    parser.add_argument("--delay", type=float, default=5.0, help="seconds per participant call")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main(parser.parse_args()))
