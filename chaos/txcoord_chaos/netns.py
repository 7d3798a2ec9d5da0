"""Packet-level faults: each process in a network namespace of its own, iptables inside it.

When the harness runs as root on a kernel that allows it, every coordinator and service
runs in its own namespace, joined to the harness by a veth pair on one bridge::

    namespace c1 (10.214.N.2) --veth-- bridge (10.214.N.1: proxies, the harness) --veth-- ...

N is the run's slot (see :mod:`txcoord_chaos.isolation`): namespaces ``txc-chaos-sNN-NAME``,
interfaces ``txcsNN-bridge``, ``txcsNN-hI`` / ``txcsNN-nI`` (Linux allows 15 characters), so
two live runs never share a name or a subnet. Every iptables rule is inside a namespace of
the run: deleting its namespaces deletes its rules.

The userspace proxies stay (latency, bandwidth and slow close come from them: this kernel
has no netem), bound to the bridge address; packet faults are iptables rules in the
namespace at one end of a link, so the kernel drops or refuses the packets:

* ``drop``: DROP, the peer sees silence (a partition at the packet level),
* ``reject``: REJECT with a TCP reset (the peer sees a refusal),
* ``loss(p)``: DROP a random share ``p`` of packets (``-m statistic``), TCP retransmits,
* ``isolate`` (a process kind): the namespace drops everything but its loopback.

A link's rules go in the namespace of its server end when the server is one of ours
(client->c1, c->accounts, ...), else in its client end's (c1->etcd2, accounts->pg, ...);
``up`` matches packets towards the server, ``down`` the replies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

PACKET_KINDS = ("drop", "reject", "loss")
ISOLATE = "isolate"
NAMESPACE_PREFIX = "txc-chaos-"
_PROBE = f"{NAMESPACE_PREFIX}probe-"
IFNAMSIZ = 15  # the kernel's limit on an interface name


class NetError(RuntimeError):
    """A namespace, link or rule could not be set up."""


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def unavailable() -> str | None:
    """Why packet-level faults cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "not running as root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian: iproute2, iptables)"
    remove_dead_probes()
    probe = f"{_PROBE}{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "iptables", "-A", "INPUT", "-p", "tcp", "-m",
             "statistic", "--mode", "random", "--probability", "0.5", "-j", "DROP")
        _run("ip", "netns", "exec", probe, "iptables", "-A", "OUTPUT", "-p", "tcp", "-j",
             "REJECT", "--reject-with", "tcp-reset")
    except NetError as exc:
        return f"network namespaces or iptables refused: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@dataclass(frozen=True)
class Ends:
    """A link as the packet rules see it: which namespace holds its rules, and the port
    that tells its packets apart there."""

    namespace: str  # a process name
    server_side: bool  # True: the rules' namespace is the server end
    port: int  # server side: the port it listens on; client side: the proxy's port


@dataclass
class PacketNet:
    """Namespaces on one bridge for ``names``, named after ``slot`` (the caller holds it);
    removed again by :meth:`teardown`."""

    names: Sequence[str]
    slot: int
    addresses: dict[str, str] = field(default_factory=dict)
    _created: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.slot <= 250:
            raise ValueError(f"slot {self.slot} out of 1..250 (it is an address octet)")
        longest = self._ifname(f"h{len(self.names)}")
        if len(self.bridge) > IFNAMSIZ or len(longest) > IFNAMSIZ:
            raise ValueError(f"interface names too long: {self.bridge}, {longest}")

    def _ifname(self, suffix: str) -> str:
        return f"{interface_prefix(self.slot)}{suffix}"

    @property
    def bridge(self) -> str:
        return self._ifname("bridge")

    @property
    def bridge_ip(self) -> str:
        return f"10.214.{self.slot}.1"

    def namespace(self, name: str) -> str:
        return f"{namespace_prefix(self.slot)}{name}"

    def setup(self) -> None:
        remove_slot(self.slot)  # the caller holds the slot: anything named so is a dead run's
        try:
            self._step("link", self.bridge, "ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for i, name in enumerate(self.names):
                self._join(i, name)
        except NetError:
            self.teardown()
            raise

    def _join(self, i: int, name: str) -> None:
        ns, host, inner = self.namespace(name), self._ifname(f"h{i}"), self._ifname(f"n{i}")
        ip = f"10.214.{self.slot}.{i + 2}"
        self._step("netns", ns, "ip", "netns", "add", ns)
        self._step("link", host, "ip", "link", "add", host, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", ns)
        _run("ip", "link", "set", host, "master", self.bridge)
        _run("ip", "link", "set", host, "up")
        for argv in (("ip", "addr", "add", f"{ip}/24", "dev", inner),
                     ("ip", "link", "set", inner, "up"), ("ip", "link", "set", "lo", "up")):
            _run("ip", "netns", "exec", ns, *argv)
        self.addresses[name] = ip

    def _step(self, kind: str, name: str, *argv: str) -> None:
        _run(*argv)
        self._created.append((kind, name))

    def wrap(self, name: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``name``'s namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace(name), *argv]

    def rules(self, kind: str, ends: Ends, direction: str, probability: float = 0.0) -> list[list[str]]:
        """iptables rule specs (after ``-A``/``-D``) for a packet fault on one link."""
        target = ["-j", "DROP"] if kind != "reject" else ["-j", "REJECT", "--reject-with", "tcp-reset"]
        chance = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.4f}"] \
            if kind == "loss" else []
        towards_server = ["--dport", str(ends.port)]
        from_server = ["--sport", str(ends.port)]
        if ends.server_side:  # packets in: towards the server; out: its replies
            up, down = ["INPUT", "-p", "tcp", *towards_server], ["OUTPUT", "-p", "tcp", *from_server]
        else:  # the client end: packets out to the proxy, replies in from it
            up = ["OUTPUT", "-p", "tcp", "-d", self.bridge_ip, *towards_server]
            down = ["INPUT", "-p", "tcp", "-s", self.bridge_ip, *from_server]
        chosen = {"up": [up], "down": [down], "both": [up, down]}[direction]
        return [[*spec, *chance, *target] for spec in chosen]

    def isolation_rules(self) -> list[list[str]]:
        return [["INPUT", "!", "-i", "lo", "-j", "DROP"], ["OUTPUT", "!", "-o", "lo", "-j", "DROP"]]

    def add_rule(self, name: str, spec: Sequence[str]) -> None:
        _run("ip", "netns", "exec", self.namespace(name), "iptables", "-A", *spec)

    def delete_rule(self, name: str, spec: Sequence[str]) -> None:
        _run("ip", "netns", "exec", self.namespace(name), "iptables", "-D", *spec)

    def teardown(self) -> None:
        for kind, name in reversed(self._created):
            argv = ["ip", "netns", "del", name] if kind == "netns" else ["ip", "link", "del", name]
            subprocess.run(argv, capture_output=True, check=False)
        self._created.clear()


def namespace_prefix(slot: int) -> str:
    return f"{NAMESPACE_PREFIX}s{slot:02d}-"


def interface_prefix(slot: int) -> str:
    return f"txcs{slot:02d}-"


def remove_slot(slot: int) -> None:
    """Delete every namespace and interface named after ``slot``. Only for a slot the
    caller holds (or whose run is dead): a live run's would go too."""
    for name in _listed(["ip", "netns", "list"], lambda line: line.split()[0]):
        if name.startswith(namespace_prefix(slot)):
            _quiet("ip", "netns", "del", name)
    # A veth's peer goes with it; the bridge last.
    for name in sorted(_listed(["ip", "-o", "link", "show"], _link_name), key=lambda n: "bridge" in n):
        if name.startswith(interface_prefix(slot)):
            _quiet("ip", "link", "del", name)


def remove_dead_probes() -> None:
    """Probe namespaces (see :func:`unavailable`) of processes that are gone."""
    for name in _listed(["ip", "netns", "list"], lambda line: line.split()[0]):
        pid = name[len(_PROBE):].split("-", 1)[0] if name.startswith(_PROBE) else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _quiet("ip", "netns", "del", name)


def _link_name(line: str) -> str:
    # "7: txcs03-h0@if6: <...>": the name, without the peer's index
    parts = line.split(":")
    return parts[1].strip().split("@", 1)[0] if len(parts) > 1 else ""


def _listed(argv: list[str], name: Callable[[str], str]) -> list[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return [name(line) for line in done.stdout.splitlines() if line.strip()]


def _quiet(*argv: str) -> None:
    subprocess.run(argv, capture_output=True, check=False)
