"""Real coordinators (in-process or as processes) on the session's private etcd
(tests/support)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from coordinator import CoordinatorClient
from coordinator.rpc.net import free_port
from coordinator.server import CoordinatorServer, DevEtcd

from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration


@asynccontextmanager
async def client_for(server: CoordinatorServer | int) -> AsyncIterator[CoordinatorClient]:
    port = server if isinstance(server, int) else server.port
    async with CoordinatorClient(f"127.0.0.1:{port}") as client:
        yield client


async def txc(port: int, *args: str) -> tuple[int, str, str]:
    """``txc tx ARGS`` as a process against the coordinator on ``port``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator.cli", "tx", "--coordinator", f"127.0.0.1:{port}",
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def participant() -> AsyncIterator[ScriptedParticipant]:
    p = await ScriptedParticipant().start()
    yield p
    await p.stop()


class CoordinatorProcess:
    """``txc serve`` as a real process, to be killed with SIGKILL."""

    def __init__(self, etcd: DevEtcd | str, prefix: str, tmp: Path,
                 env: dict[str, str] | None = None):
        """``etcd``: the session's etcd, or an endpoint that leads to it (a fault proxy)."""
        endpoint = etcd if isinstance(etcd, str) else etcd.endpoint
        self.port = free_port()
        self.log_path = tmp / f"coordinator-{self.port}.log"
        cmd = [sys.executable, "-m", "coordinator.cli", "serve", "--listen",
               f"127.0.0.1:{self.port}", "--etcd", endpoint, "--prefix", prefix,
               "--lease-ttl", "2", "--grace", "2"]
        self.proc = subprocess.Popen(cmd, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    async def ready(self) -> None:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        try:
            await channel.channel_ready()
        finally:
            await channel.close(None)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


Pair = tuple[CoordinatorProcess, CoordinatorProcess]


@asynccontextmanager
async def two_coordinator_processes(etcd: DevEtcd, prefix: str, tmp: Path) -> AsyncIterator[Pair]:
    """Two ``txc serve`` processes on one etcd, ready; both stopped afterwards."""
    first, second = CoordinatorProcess(etcd, prefix, tmp), CoordinatorProcess(etcd, prefix, tmp)
    try:
        await first.ready()
        await second.ready()
        yield first, second
    finally:
        first.stop()
        second.stop()
