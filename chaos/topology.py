"""The harness' world: a 3-member etcd cluster, two coordinators, the two services, and a
fault proxy on every link between them. Processes (etcd members included) can be killed,
restarted, paused and resumed by name.

    client --client->c1/c2--> coordinators --c->accounts/c->orders--> services
    coordinators --cN->etcd1..3--> etcd members   services --accounts->pg/orders->maria--> DBs
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.server._dev_etcd import free_port

from .etcd_cluster import MEMBERS, EtcdCluster
from .proxy import FaultProxy


@dataclass(frozen=True)
class Databases:
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    maria_host: str = "127.0.0.1"
    maria_port: int = 3306
    maria_user: str = "root"
    name: str = "txc_chaos"

    def pg(self, port: int | None = None) -> str:
        return f"postgresql+asyncpg://{self.pg_user}@{self.pg_host}:{port or self.pg_port}/{self.name}"

    def maria(self, port: int | None = None) -> str:
        return f"mysql+aiomysql://{self.maria_user}@{self.maria_host}:{port or self.maria_port}/{self.name}"


@dataclass
class Process:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    retired: bool = False  # stopped for good: a late nemesis revert must not restart it

    def start(self) -> None:
        if self.retired:
            return
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.paused = False

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def pause(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.proc and self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        self.retired = True
        self.resume()
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Topology:
    out: Path
    dbs: Databases = field(default_factory=Databases)
    links: dict[str, FaultProxy] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _etcd_dir: tempfile.TemporaryDirectory[str] | None = None

    async def start(self, two_phase: bool = False) -> None:
        self._etcd_dir = tempfile.TemporaryDirectory(prefix="txc-chaos-etcd-")
        etcd = EtcdCluster(Path(self._etcd_dir.name))
        for member in MEMBERS:
            self.processes[member] = Process(member, etcd.argv(member), self.out / f"{member}.log")
            self.processes[member].start()
        await _wait_healthy(etcd.client_ports, timeout_s=30.0)
        for name in ("c1", "c2", "accounts", "orders"):
            self.ports[name] = free_port()
        etcd_links = [(f"{c}->{m}", etcd.client_ports[m]) for c in ("c1", "c2") for m in MEMBERS]
        for name, port in (("client->c1", self.ports["c1"]), ("client->c2", self.ports["c2"]),
                           ("c->accounts", self.ports["accounts"]),
                           ("c->orders", self.ports["orders"]),
                           *etcd_links,
                           ("accounts->pg", self.dbs.pg_port),
                           ("orders->maria", self.dbs.maria_port)):
            host = self.dbs.pg_host if name == "accounts->pg" else "127.0.0.1"
            proxy = FaultProxy("127.0.0.1", 0, host, port, name=name)
            await proxy.start()
            self.links[name] = proxy
        self._define_processes(two_phase)
        for process in self.processes.values():
            if not process.alive():
                process.start()
        await self.wait_ready()

    def link_port(self, name: str) -> int:
        return self.links[name].port

    def _define_processes(self, two_phase: bool) -> None:
        py = sys.executable
        # 2PC participants resolve in-doubt branches by asking a coordinator directly
        # (gRPC's ipv4: target with both: the first that answers).
        both = ",".join(f"127.0.0.1:{self.ports[c]}" for c in ("c1", "c2"))
        ask = ["--coordinator", f"ipv4:{both}"] if two_phase else []
        for c in ("c1", "c2"):
            self.processes[c] = Process(c, [
                py, "-m", "coordinator.cli", "serve", "--listen", f"127.0.0.1:{self.ports[c]}",
                "--etcd", ",".join(f"127.0.0.1:{self.link_port(f'{c}->{m}')}" for m in MEMBERS),
                "--lease-ttl", "5",
                "--max-calls-per-participant", "16", "--grace", "1", "--log-level", "warning"],
                self.out / f"{c}.log")
        self.processes["accounts"] = Process("accounts", [
            py, "-m", "chaos.workload.services", "accounts",
            "--dsn", self.dbs.pg(self.link_port("accounts->pg")),
            "--listen", f"127.0.0.1:{self.ports['accounts']}", *ask], self.out / "accounts.log")
        self.processes["orders"] = Process("orders", [
            py, "-m", "chaos.workload.services", "orders",
            "--dsn", self.dbs.maria(self.link_port("orders->maria")),
            "--listen", f"127.0.0.1:{self.ports['orders']}", *ask], self.out / "orders.log")

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        for name, port in self.ports.items():
            await _wait_port(port, timeout_s, name)

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.heal()
        for process in self.processes.values():
            process.resume()
            if not process.alive():
                process.start()

    async def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        for proxy in self.links.values():
            await proxy.stop()
        if self._etcd_dir is not None:
            self._etcd_dir.cleanup()
            self._etcd_dir = None


async def _wait_healthy(client_ports: dict[str, int], timeout_s: float) -> None:
    """Until every member answers /health true: the cluster has a leader."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    pending = dict(client_ports)
    while pending and loop.time() < end:
        for name, port in list(pending.items()):
            if await asyncio.to_thread(_healthy, port):
                del pending[name]
        if pending:
            await asyncio.sleep(0.2)
    if pending:
        raise RuntimeError(f"etcd members {sorted(pending)} not healthy within {timeout_s}s")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
            return b'"true"' in reply.read()
    except OSError:
        return False


async def _wait_port(port: int, timeout_s: float, name: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{name} did not start listening on {port} within {timeout_s}s")
