"""The fault proxy against a real echo server on loopback: each fault, many connections, stop."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from txcoord_chaos.proxy import Bandwidth, Cut, FaultProxy, Latency, Partition, Reset, SlowClose

HOST = "127.0.0.1"
QUIET_S = 0.3  # how long "nothing arrives" is watched for


@dataclass
class Echo:
    """An echo server that also records every byte it received."""

    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
        except OSError:
            pass  # the proxy reset us: part of several tests
        finally:
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    echo = Echo()
    echo.server = await asyncio.start_server(echo.handle, HOST, 0)
    echo.port = echo.server.sockets[0].getsockname()[1]
    yield echo
    echo.server.close()


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(HOST, 0, HOST, echo.port, name="test", rng=random.Random(7))
    await proxy.start()
    yield proxy
    await proxy.stop()


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, proxy.port)


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes,
                    within_s: float = 2.0) -> float:
    """Send ``data``, wait for its echo; returns the seconds it took."""
    start = time.perf_counter()
    writer.write(data)
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(len(data)), within_s) == data
    return time.perf_counter() - start


async def assert_silent(reader: asyncio.StreamReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), QUIET_S)


async def assert_reset(reader: asyncio.StreamReader) -> None:
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(1), 2.0)


async def assert_closed(reader: asyncio.StreamReader) -> None:
    """Closed either way (FIN or RST): what a refused or stopped connection looks like."""
    try:
        data = await asyncio.wait_for(reader.read(1), 2.0)
    except ConnectionResetError:
        return
    assert data == b""


async def test_passes_bytes_both_ways_and_counts_them(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"hello")
    assert (proxy.stats.bytes_up, proxy.stats.bytes_down) == (5, 5)
    assert proxy.stats.connections_total == 1
    writer.close()


async def test_latency_delays_the_direction_it_is_set_on(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    baseline = await roundtrip(reader, writer, b"x")
    proxy.set_fault("up", Latency(100))
    one_way = await roundtrip(reader, writer, b"x")
    proxy.set_fault("both", Latency(100))
    both_ways = await roundtrip(reader, writer, b"x")
    proxy.heal()
    healed = await roundtrip(reader, writer, b"x")
    assert baseline < 0.05 and healed < 0.05
    assert 0.095 <= one_way < 0.3
    assert 0.195 <= both_ways < 0.45
    assert proxy.stats.faults["latency_chunks"] == 3
    writer.close()


async def test_latency_jitter_keeps_byte_order(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    proxy.set_fault("both", Latency(20, jitter_ms=19))
    sent = b""
    for i in range(100):
        message = f"{i:04d};".encode()
        sent += message
        writer.write(message)
        await writer.drain()
        await asyncio.sleep(0.001)  # separate chunks, so each gets its own jittered delay
    got = await asyncio.wait_for(reader.readexactly(len(sent)), 5.0)
    assert got == sent
    assert proxy.stats.faults["latency_chunks"] >= 20
    writer.close()


async def test_bandwidth_limits_the_rate(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    payload = bytes(100_000)
    assert await roundtrip(reader, writer, payload) < 0.2
    proxy.set_fault("down", Bandwidth(200_000))
    limited = await roundtrip(reader, writer, payload, within_s=5.0)
    assert 0.4 <= limited < 1.5  # 100 kB at 200 kB/s = 0.5 s
    assert proxy.stats.faults["bandwidth_bytes"] == len(payload)
    writer.close()


async def test_partition_holds_bytes_and_heal_resets_the_holders(proxy: FaultProxy, echo: Echo) -> None:
    held_r, held_w = await connect(proxy)
    idle_r, idle_w = await connect(proxy)
    await roundtrip(held_r, held_w, b"before")
    await roundtrip(idle_r, idle_w, b"before")
    proxy.set_fault("both", Partition())

    held_w.write(b"during")
    await held_w.drain()
    new_r, new_w = await connect(proxy)  # accepted, but not connected through
    new_w.write(b"knock")
    await new_w.drain()
    await assert_silent(held_r)
    await assert_silent(new_r)
    assert b"during" not in echo.received  # held, not passed
    assert proxy.stats.connections_active == 3  # connections stay open

    proxy.heal()
    await assert_reset(held_r)  # held bytes are dropped, the connection is broken
    assert await asyncio.wait_for(new_r.readexactly(5), 2.0) == b"knock"  # late SYN got through
    await roundtrip(idle_r, idle_w, b"after")  # nothing crossed the partition: untouched
    assert b"during" not in echo.received
    assert proxy.stats.faults["partition_resets"] == 1
    assert proxy.stats.faults["partition_waits"] == 1
    for w in (held_w, idle_w, new_w):
        w.close()


async def test_one_way_partition_lets_the_other_direction_flow(proxy: FaultProxy, echo: Echo) -> None:
    reader, writer = await connect(proxy)
    proxy.set_fault("down", Partition())
    writer.write(b"ping")
    await writer.drain()
    await assert_silent(reader)
    assert bytes(echo.received) == b"ping"  # up still flows; the echo is held on the way down
    proxy.clear("down", Partition)
    await assert_reset(reader)


async def test_reset_closes_open_connections_and_refuses_new_ones(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    await roundtrip(reader, writer, b"ok")
    proxy.set_fault("both", Reset())
    await assert_reset(reader)
    refused_r, _ = await connect(proxy)
    await assert_closed(refused_r)
    assert proxy.stats.faults["reset_connections"] == 1
    assert proxy.stats.faults["reset_refused"] == 1
    proxy.clear("both", Reset)
    again_r, again_w = await connect(proxy)
    await roundtrip(again_r, again_w, b"back")
    again_w.close()


async def test_cut_is_one_way(proxy: FaultProxy, echo: Echo) -> None:
    reader, writer = await connect(proxy)
    proxy.set_fault("down", Cut())
    writer.write(b"ping")
    await writer.drain()
    await assert_silent(reader)
    assert bytes(echo.received) == b"ping"  # reached the server, its reply was dropped

    proxy.set_fault("up", Cut())
    proxy.clear("down")
    writer.write(b"lost")
    await writer.drain()
    await assert_silent(reader)
    assert bytes(echo.received) == b"ping"  # never reached the server

    proxy.heal()
    await roundtrip(reader, writer, b"again")  # the connection itself survived
    assert proxy.stats.faults["cut_bytes"] == 8
    writer.close()


async def test_slow_close_delays_the_fin(proxy: FaultProxy) -> None:
    async def seconds_to_eof() -> float:
        reader, writer = await connect(proxy)
        await roundtrip(reader, writer, b"x")
        start = time.perf_counter()
        writer.write_eof()  # the echo server closes back when it sees the FIN
        assert await asyncio.wait_for(reader.read(1), 3.0) == b""
        writer.close()
        return time.perf_counter() - start

    assert await seconds_to_eof() < 0.1
    proxy.set_fault("down", SlowClose(300))
    assert 0.29 <= await seconds_to_eof() < 1.0
    assert proxy.stats.faults["slow_closes"] == 1


async def test_many_concurrent_connections(proxy: FaultProxy) -> None:
    proxy.set_fault("both", Latency(5, jitter_ms=5))

    async def client(i: int) -> None:
        reader, writer = await connect(proxy)
        for j in range(10):
            await roundtrip(reader, writer, f"{i}:{j};".encode(), within_s=10.0)
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(client(i) for i in range(200)))
    assert proxy.stats.connections_total == 200
    for _ in range(100):
        if proxy.stats.connections_active == 0:
            break
        await asyncio.sleep(0.02)
    assert proxy.stats.connections_active == 0


async def test_stop_closes_every_connection_and_the_listener(echo: Echo) -> None:
    proxy = FaultProxy(HOST, 0, HOST, echo.port, name="stopping")
    port = await proxy.start()
    pairs = [await connect(proxy) for _ in range(10)]
    for reader, writer in pairs:
        await roundtrip(reader, writer, b"hi")
    proxy.set_fault("both", Partition())  # held relays must end too
    pairs[0][1].write(b"held")
    await asyncio.sleep(0.05)
    await asyncio.wait_for(proxy.stop(), 2.0)
    for reader, writer in pairs:
        await assert_closed(reader)
        writer.close()
    assert proxy.stats.connections_active == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(HOST, port)


async def test_unreachable_target_looks_like_a_refused_connection() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind((HOST, 0))
        dead_port = probe.getsockname()[1]
    proxy = FaultProxy(HOST, 0, HOST, dead_port, name="dead")
    await proxy.start()
    reader, writer = await connect(proxy)
    await assert_closed(reader)
    assert proxy.stats.faults["target_unreachable"] == 1
    writer.close()
    await proxy.stop()


def test_clear_by_type_and_validation() -> None:
    proxy = FaultProxy(HOST, 0, HOST, 1, name="offline")
    proxy.set_fault("up", Latency(10))
    proxy.set_fault("up", Latency(20))  # same type: replaces
    proxy.set_fault("both", Cut())
    proxy.clear("both", Cut)
    assert proxy.faults() == {"up": [Latency(20)], "down": []}
    with pytest.raises(ValueError, match="sideways"):
        proxy.set_fault("sideways", Cut())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Latency(-1)
    with pytest.raises(ValueError):
        Bandwidth(0)
