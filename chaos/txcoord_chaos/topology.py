"""The harness' world: a 3-member etcd cluster, two coordinators, the two services, and a
fault proxy on every link between them. Processes (etcd members included) can be killed,
restarted, paused and resumed by name.

    client --client->c1/c2--> coordinators --c->accounts/c->orders--> services
    coordinators --cN->etcd1..3--> etcd members   services --accounts->pg/orders->maria--> DBs
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .databases import Databases, ensure_databases
from .etcd_cluster import MEMBERS, EtcdCluster
from .isolation import Identity
from .netns import ISOLATE, Ends, NetError, PacketNet
from .proxy import FaultProxy

__all__ = ["LINKS", "PROCESSES", "SERVICES", "Databases", "Process", "Topology",
           "ensure_databases", "wait_port"]


@dataclass
class Process:
    name: str
    argv: list[str]
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)  # the run's tag (isolation.ENV_TAG)
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    retired: bool = False  # stopped for good: a late nemesis revert must not restart it

    def start(self) -> None:
        if self.retired:
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
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

    def stop(self, wait_s: float = 10.0) -> None:
        self.terminate()
        self.reap(time.monotonic() + wait_s)

    def terminate(self, hard: bool = False) -> None:
        """Retire and ask to end (SIGTERM; SIGKILL if ``hard``); :meth:`reap` waits. Apart,
        so that many processes stop in parallel."""
        self.retired = True
        self.resume()
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) for the end, then SIGKILL."""
        if self.proc is None:
            return
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()


SERVICES = ("c1", "c2", "accounts", "orders")  # the processes a packet network isolates
PROCESSES = (*SERVICES, *MEMBERS)
LINKS = ("client->c1", "client->c2", "c->accounts", "c->orders",
         *(f"{c}->{m}" for c in ("c1", "c2") for m in MEMBERS), "accounts->pg", "orders->maria")
LEASE_TTL_S = 5  # the coordinators' lease: pauses longer than this are split-brain faults
STOP_WAIT_S = 10.0


def max_active_for(rate: float, timeout_s: float) -> int:
    """An admission limit sized for the workload (Little's law): one coordinator alone can
    hold every transfer a client may still be waiting for (rate x timeout), so a participant
    that is down for a few seconds delays transfers instead of having them refused."""
    return max(40, math.ceil(rate * timeout_s))


@dataclass
class Topology:
    """``packet``: run each service in a network namespace of its own, so that iptables
    faults (see :mod:`txcoord_chaos.netns`) can be applied; None keeps everything on loopback."""

    out: Path
    identity: Identity  # names, ports and the process tag of this run (its slot)
    etcd_dir: Path  # the members' data, removed by stop()
    dbs: Databases = field(default_factory=Databases)
    packet: PacketNet | None = None
    packet_error: str | None = None  # why the packet network fell back to loopback
    max_active: int = 40  # each coordinator's --max-active (admission limit)
    links: dict[str, FaultProxy] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _rules: dict[int, list[tuple[str, list[str]]]] = field(default_factory=dict)

    async def start(self, two_phase: bool = False, packet_required: bool = False) -> None:
        if self.packet is not None:
            try:
                self.packet.setup()
            except NetError as exc:
                if packet_required:
                    raise
                self.packet, self.packet_error = None, f"setting up the namespaces failed: {exc}"
        own = self.identity.ports
        etcd = EtcdCluster(self.etcd_dir, {m: own[m] for m in MEMBERS},
                           {m: own[f"{m}-peer"] for m in MEMBERS})
        for member in MEMBERS:
            self._define(member, etcd.argv(member), namespaced=False)
            self.processes[member].start()
        await _wait_healthy(etcd.client_ports, timeout_s=30.0)
        for name in SERVICES:
            self.ports[name] = own[name]
        etcd_links = [(f"{c}->{m}", ("127.0.0.1", etcd.client_ports[m]))
                      for c in ("c1", "c2") for m in MEMBERS]
        for name, upstream in (("client->c1", self.address("c1")),
                               ("client->c2", self.address("c2")),
                               ("c->accounts", self.address("accounts")),
                               ("c->orders", self.address("orders")),
                               *etcd_links,
                               ("accounts->pg", (self.dbs.pg_host, self.dbs.pg_port)),
                               ("orders->maria", (self.dbs.maria_host, self.dbs.maria_port))):
            proxy = FaultProxy(self._proxy_host, 0, *upstream, name=name)
            await proxy.start()
            self.links[name] = proxy
        self._define_processes(two_phase)
        for process in self.processes.values():
            if not process.alive():
                process.start()
        await self.wait_ready()

    @property
    def _proxy_host(self) -> str:
        return self.packet.bridge_ip if self.packet else "127.0.0.1"

    def address(self, name: str) -> tuple[str, int]:
        """Where a service listens, as reached from the harness' own namespace."""
        host = self.packet.addresses[name] if self.packet else "127.0.0.1"
        return host, self.ports[name]

    def link_port(self, name: str) -> int:
        return self.links[name].port

    def link(self, name: str) -> str:
        """``host:port`` to reach the far end of a link through its proxy."""
        return f"{self._proxy_host}:{self.link_port(name)}"

    def _define_processes(self, two_phase: bool) -> None:
        py = sys.executable
        # 2PC participants resolve in-doubt branches by asking a coordinator directly
        # (both, past the proxies: the client fails over from one that cannot answer).
        both = ",".join("{}:{}".format(*self.address(c)) for c in ("c1", "c2"))
        ask = ["--coordinator", both] if two_phase else []
        listen = {n: f"{'0.0.0.0' if self.packet else '127.0.0.1'}:{self.ports[n]}" for n in SERVICES}
        for c in ("c1", "c2"):
            self._define(c, [
                py, "-m", "coordinator.cli", "serve", "--listen", listen[c],
                "--etcd", ",".join(self.link(f"{c}->{m}") for m in MEMBERS), "--lease-ttl", str(LEASE_TTL_S),
                "--prefix", self.identity.etcd_prefix,
                "--max-calls-per-participant", "16", "--max-active", str(self.max_active),
                "--grace", "1",
                "--log-level", "warning"])
        pg_host, pg_port = self.link("accounts->pg").rsplit(":", 1)
        maria_host, maria_port = self.link("orders->maria").rsplit(":", 1)
        self._define("accounts", [
            py, "-m", "txcoord_chaos.workload.services", "accounts",
            "--dsn", self.dbs.pg(int(pg_port), pg_host), "--listen", listen["accounts"], *ask])
        self._define("orders", [
            py, "-m", "txcoord_chaos.workload.services", "orders",
            "--dsn", self.dbs.maria(int(maria_port), maria_host), "--listen", listen["orders"], *ask])

    def _define(self, name: str, argv: list[str], namespaced: bool = True) -> None:
        if self.packet is not None and namespaced:
            argv = self.packet.wrap(name, argv)
        self.processes[name] = Process(name, argv, self.out / f"{name}.log", self.identity.env)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        for name in self.ports:
            await wait_port(self.address(name), timeout_s, name)

    # -- packet faults ------------------------------------------------------------------

    def ends(self, link: str) -> Ends:
        """Where a link's packet rules go: its server end if that is one of ours."""
        client, server = link.split("->")
        if server in SERVICES:
            return Ends(server, True, self.ports[server])
        owner = "c1" if client == "c" else client  # "c->x" links have a server of ours
        return Ends(owner, False, self.link_port(link))

    def apply_packet(self, key: int, kind: str, target: str, direction: str,
                     probability: float = 0.0) -> None:
        if self.packet is None:
            raise NetError("packet-level faults need the packet network (root, iproute2, iptables)")
        if kind == ISOLATE:
            rules = [(target, spec) for spec in self.packet.isolation_rules()]
        else:
            ends = self.ends(target)
            rules = [(ends.namespace, spec)
                     for spec in self.packet.rules(kind, ends, direction, probability)]
        for name, spec in rules:
            self.packet.add_rule(name, spec)
        self._rules[key] = rules

    def revert_packet(self, key: int) -> None:
        assert self.packet is not None
        for name, spec in self._rules.pop(key, []):
            self.packet.delete_rule(name, spec)

    def heal(self) -> None:
        for key in list(self._rules):
            self.revert_packet(key)
        for proxy in self.links.values():
            proxy.heal()
        for process in self.processes.values():
            process.resume()
            if not process.alive():
                process.start()

    async def stop(self) -> None:
        # In parallel, etcd after the rest: a coordinator that loses etcd first only
        # takes longer to exit. etcd is killed: its data goes, and a leader stopped with
        # its followers waits seconds trying to hand its leadership over.
        for wave in (SERVICES, MEMBERS):
            procs = [p for n, p in self.processes.items() if n in wave]
            for process in procs:
                process.terminate(hard=wave is MEMBERS)
            deadline = time.monotonic() + STOP_WAIT_S
            for process in procs:
                await asyncio.to_thread(process.reap, deadline)
        for proxy in self.links.values():
            await proxy.stop()
        shutil.rmtree(self.etcd_dir, ignore_errors=True)
        if self.packet is not None:
            self.packet.teardown()


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


async def wait_port(address: tuple[str, int], timeout_s: float, name: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        try:
            _, writer = await asyncio.open_connection(*address)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{name} did not start listening on {address} within {timeout_s}s")
