"""Packet-level faults for real: a server in its own network namespace, iptables rules
inside it, and what a client on the other side of the veth sees. Needs root, iproute2 and
iptables (scripts/setup.sh installs them); skipped, with the reason, elsewhere."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from txcoord_chaos import isolation, netns
from txcoord_chaos.netns import Ends, PacketNet

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(netns.unavailable() is not None,
                                 reason=f"packet faults unavailable: {netns.unavailable()}")]

PORT = 7411
ECHO = ("import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0', {PORT})); s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept(); c.sendall(c.recv(16)); c.close()\n")


@pytest.fixture
def slot() -> Iterator[int]:
    """A slot of our own, so a chaos run on this machine keeps its names and subnet."""
    lease = isolation.claim_slot()
    try:
        yield lease.identity.slot
    finally:
        lease.release()


@pytest.fixture
def net(slot: int) -> Iterator[PacketNet]:
    packet = PacketNet(["srv"], slot)
    packet.setup()
    server = subprocess.Popen(packet.wrap("srv", [sys.executable, "-c", ECHO]))
    try:
        yield packet
    finally:
        server.kill()
        server.wait()
        packet.teardown()


async def _echo(host: str, wait_s: float = 1.0) -> str:
    """'ok', 'silence' (nothing came back in time) or 'refused' (a reset)."""
    try:
        async with asyncio.timeout(wait_s):
            reader, writer = await asyncio.open_connection(host, PORT)
            writer.write(b"ping")
            data = await reader.read(16)
            writer.close()
            return "ok" if data == b"ping" else "refused"
    except TimeoutError:
        return "silence"
    except ConnectionError:
        return "refused"


async def _until_ok(host: str) -> str:
    for _ in range(50):
        if (answer := await _echo(host)) == "ok":
            return answer
        await asyncio.sleep(0.1)
    return answer


async def test_drop_is_silence_reject_is_a_reset_and_both_go_away(net: PacketNet) -> None:
    host = net.addresses["srv"]
    assert await _until_ok(host) == "ok"
    ends = Ends("srv", server_side=True, port=PORT)
    for kind, seen in (("drop", "silence"), ("reject", "refused")):
        rules = net.rules(kind, ends, "up")
        for spec in rules:
            net.add_rule("srv", spec)
        assert await _echo(host) == seen, kind
        for spec in rules:
            net.delete_rule("srv", spec)
        assert await _echo(host) == "ok", f"{kind} was not reverted"


async def test_one_way_drop_of_replies_and_isolation(net: PacketNet) -> None:
    host = net.addresses["srv"]
    assert await _until_ok(host) == "ok"
    (down,) = net.rules("drop", Ends("srv", True, PORT), "down")
    net.add_rule("srv", down)
    assert await _echo(host) == "silence"  # requests arrive, replies vanish
    net.delete_rule("srv", down)
    for spec in net.isolation_rules():
        net.add_rule("srv", spec)
    assert await _echo(host) == "silence"
    for spec in net.isolation_rules():
        net.delete_rule("srv", spec)
    assert await _echo(host) == "ok"


async def test_random_loss_drops_some_packets_and_tcp_gets_through(net: PacketNet) -> None:
    host = net.addresses["srv"]
    assert await _until_ok(host) == "ok"
    (rule,) = net.rules("loss", Ends("srv", True, PORT), "up", probability=0.3)
    assert "statistic" in rule and "0.3000" in rule
    net.add_rule("srv", rule)
    started, answers = time.monotonic(), [await _echo(host, wait_s=5.0) for _ in range(10)]
    listed = (await asyncio.to_thread(subprocess.run, ["ip", "netns", "exec", net.namespace("srv"),
        "iptables", "-L", "INPUT", "-v", "-x", "-n"], capture_output=True, text=True)).stdout
    dropped = int(next(line.split()[0] for line in listed.splitlines() if "statistic" in line))
    assert dropped > 0  # the kernel dropped packets ...
    assert answers.count("ok") >= 8, answers  # ... and TCP retransmitted through the loss
    assert time.monotonic() - started < 60


def test_teardown_removes_namespaces_and_bridge(slot: int) -> None:
    packet = PacketNet(["a", "b"], slot)
    packet.setup()
    names = [packet.namespace("a"), packet.namespace("b")]
    packet.teardown()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)
    links = subprocess.run(["ip", "link", "show", packet.bridge], capture_output=True, text=True)
    assert links.returncode != 0


def test_names_fit_the_kernel_and_differ_per_slot() -> None:
    one, other = PacketNet(list(isolation.PORT_NAMES), 1), PacketNet(["a"], isolation.SLOTS)
    for net in (one, other):
        assert len(net.bridge) <= netns.IFNAMSIZ
        assert all(len(f"{netns.interface_prefix(net.slot)}{end}{i}") <= netns.IFNAMSIZ
                   for end in "hn" for i in range(len(net.names)))
    assert one.namespace("c1") != other.namespace("c1") and one.bridge_ip != other.bridge_ip


def test_remove_slot_leaves_other_slots_alone(net: PacketNet) -> None:
    other = isolation.claim_slot()
    try:
        netns.remove_slot(other.identity.slot)  # nothing of ours is named after it
    finally:
        other.release()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert net.namespace("srv") in listed
    netns.remove_slot(net.slot)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert net.namespace("srv") not in listed
