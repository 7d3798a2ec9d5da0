"""One private etcd, one no-op participant and one coordinator (batch transport), as the
no-op benchmarks start them, stopped and cleaned up on the way out."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from txcoord_chaos.topology import wait_port

from coordinator.rpc.net import free_port
from coordinator.server import DevEtcd

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class NoopWorld:
    etcd: DevEtcd
    participant: str  # address
    coordinator: str  # address
    pids: dict[str, int]  # "coordinator", "participant", "etcd"


@contextmanager
def noop_world(prefix: str) -> Iterator[NoopWorld]:
    etcd = DevEtcd().start()
    pport, cport = free_port(), free_port()
    participant = subprocess.Popen([sys.executable, str(HERE / "noop_participant.py"), str(pport)])
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve", "--listen", f"127.0.0.1:{cport}",
         "--etcd", etcd.endpoint, "--prefix", prefix, "--participant-transport", "batch",
         "--log-level", "warning"])
    try:
        for port in (pport, cport):
            asyncio.run(wait_port(("127.0.0.1", port), 60, f"port {port}"))
        pids = {"coordinator": coordinator.pid, "participant": participant.pid,
                "etcd": etcd.process.pid if etcd.process else 0}
        yield NoopWorld(etcd, f"127.0.0.1:{pport}", f"127.0.0.1:{cport}", pids)
    finally:
        for process in (coordinator, participant):
            process.terminate()
            process.wait()
        etcd.cleanup()
