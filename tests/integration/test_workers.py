"""``txc serve --workers N``: N coordinator processes on one port, each a member of its own.

Real processes throughout: the supervisor as ``txc serve`` starts them, a worker is killed
with SIGKILL while its sagas wait on a participant, and the supervisor itself is stopped
with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from coordinator import CoordinatorClient, Retry, Saga, Step, pb
from coordinator._proto.txc.v1 import coordinator_pb2_grpc as pb_grpc
from coordinator.rpc.net import free_port
from coordinator.server import DevEtcd
from tests.support.metrics import value
from tests.support.processes import ROOT

from .participant import ScriptedParticipant
from .test_metrics import scrape

pytestmark = pytest.mark.integration
FAST = Retry(initial_backoff_s=0.02, max_backoff_s=0.2)
READY = re.compile(r"worker (\d+) ready \(pid (\d+), node (\S+)\)")
B_SLEEP_S = 4.0  # b's call outlasts the starts and the kill


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports nobody listens on now."""
    while True:
        first = free_port()
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue


class Supervised:
    """``txc serve --workers 2`` as a process; its log (supervisor and workers) in a file."""

    def __init__(self, tmp: Path, *args: str, metrics: int = 0) -> None:
        self.port, self.metrics = free_port(), metrics or free_ports(2)
        self.log = tmp / "serve.log"
        cmd = [sys.executable, "-m", "coordinator.cli", "serve", "--workers", "2",
               "--listen", f"127.0.0.1:{self.port}", "--metrics-listen",
               f"127.0.0.1:{self.metrics}", "--lease-ttl", "2", "--grace", "2", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text()

    def ready(self) -> dict[int, tuple[int, str]]:
        """Each worker's last ready line: index -> (pid, node id)."""
        return {int(i): (int(pid), node) for i, pid, node in READY.findall(self.text())}

    async def serving(self, expect: int, within_s: float = 20.0,
                      not_pid: int = 0) -> dict[int, tuple[int, str]]:
        end = time.monotonic() + within_s
        while time.monotonic() < end:
            ready = self.ready()
            if len(ready) == expect and not_pid not in {pid for pid, _ in ready.values()}:
                return ready
            assert self.proc.poll() is None, self.text()[-3000:]
            await asyncio.sleep(0.1)
        raise AssertionError(f"workers not serving within {within_s}s:\n{self.text()[-3000:]}")

    async def started(self, worker: int) -> float:
        return value(await scrape(self.metrics + worker), "txc_transactions_started_total",
                     protocol="saga")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(40)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def slow_saga(p: ScriptedParticipant, gid: str) -> Saga:
    return Saga([Step("a", p.address, "a.do", "a.undo", {}, retry=FAST),
                 Step("b", p.address, "b.do", "b.undo", {"sleep": B_SLEEP_S}, retry=FAST,
                      timeout_s=10),
                 Step("c", p.address, "c.do", "c.undo", {}, retry=FAST)], gid=gid)


async def start_on_a_new_connection(port: int, saga: Saga) -> None:
    """One start over a connection of its own (no subchannel shared with another channel):
    the kernel hands each new connection to one of the workers."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        await pb_grpc.CoordinatorStub(channel).StartSaga(saga.to_proto(False), timeout=10)


async def start_until_both_drive(served: Supervised, p: ScriptedParticipant) -> list[str]:
    """Slow sagas, each on a new connection, until every worker has started some."""
    gids: list[str] = []
    for i in range(40):
        gids.append(f"w-{i}")
        await start_on_a_new_connection(served.port, slow_saga(p, gids[-1]))
        if min([await served.started(0), await served.started(1)]) >= 1:
            return gids
    raise AssertionError("40 connections, all to one worker")


async def wait_for_calls(p: ScriptedParticipant, keys: set[str]) -> None:
    for _ in range(500):
        if keys <= {c.key for c in p.calls}:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never called: {sorted(keys - {c.key for c in p.calls})}")


async def test_a_worker_killed_mid_saga_leaves_its_work_to_the_others_exactly_once(
        participant: ScriptedParticipant, tmp_path: Path) -> None:
    served = Supervised(tmp_path, "--dev")  # one private etcd, the workers share it
    try:
        killed_pid, _ = (await served.serving(2))[1]
        gids = await start_until_both_drive(served, participant)
        await wait_for_calls(participant, {f"{g}/b/execute" for g in gids})
        on_killed = value(await scrape(served.metrics + 1), "txc_transactions_in_flight",
                          protocol="saga")
        assert not [k for k in participant.effects if "/b/" in k], "b ended before the kill"
        os.kill(killed_pid, signal.SIGKILL)  # its b calls are in flight; their replies are lost
        async with CoordinatorClient(f"127.0.0.1:{served.port}") as client:
            txs = [await client.wait_settled(g, 20) for g in gids]
        replaced = await served.serving(2, not_pid=killed_pid)
        takeovers = [value(await scrape(served.metrics + w), "txc_takeovers_total") for w in (0, 1)]
        code = await asyncio.to_thread(served.terminate)
    finally:
        served.stop()
    log = served.text()
    assert {tx.state for tx in txs} == {pb.TX_STATE_COMMITTED}
    assert dict(participant.effects) == {f"{g}/{b}/execute": 1 for g in gids for b in "abc"}
    assert sum(takeovers) == on_killed >= 1  # every saga of the killed worker, claimed once
    claimed = re.findall(r"\[w[01]\] claimed orphan gid=(\S+)", log)  # its lines name a worker
    assert len(claimed) == len(set(claimed)) == on_killed
    assert f"worker 1 (pid {killed_pid}, " in log and "was killed by SIGKILL" in log
    assert replaced[1][0] != killed_pid  # a new worker 1 took its place
    assert code == 0, log[-3000:]
    assert "Traceback" not in log
    assert "every worker stopped" in log
    for _, node in replaced.values():
        assert f"coordinator {node} stopped" in log


async def test_a_worker_that_cannot_start_stops_the_group_with_an_error(
        etcd: DevEtcd, prefix: str, tmp_path: Path) -> None:
    metrics = free_ports(2)
    with socket.socket() as taken:  # worker 1's metrics port
        taken.bind(("127.0.0.1", metrics + 1))
        taken.listen()
        served = Supervised(tmp_path, "--etcd", etcd.endpoint, "--prefix", prefix,
                            metrics=metrics)
        try:
            code = await asyncio.to_thread(served.proc.wait, 40)
        finally:
            served.stop()
    log = served.text()
    assert code == 1, log[-3000:]
    assert re.search(r"worker 1 \(pid \d+, node not yet serving\) exited with code 1", log), log
    assert "worker 1 failed before it served: stopping the others" in log
    assert not re.search(r"worker 0 .*(exited with|was killed|did not stop)", log), log


@pytest.mark.parametrize(("flags", "env", "says"), [
    (["--listen", "127.0.0.1:0"], {"TXC_WORKERS": "2"}, "port 0 would give each worker"),
    (["--workers", "0"], {}, "--workers must be >= 1"),
])
def test_workers_refuse_what_they_cannot_serve(flags: list[str], env: dict[str, str],
                                               says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "coordinator.cli", "serve", "--etcd",
                           "127.0.0.1:1", *flags], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=30)
    assert done.returncode != 0
    assert says in done.stderr
