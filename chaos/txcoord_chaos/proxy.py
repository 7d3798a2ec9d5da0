"""A fault-injecting TCP proxy (asyncio, no root needed), one per link.

Each accepted connection is relayed in two directions: ``up`` (client -> target) and
``down`` (target -> client). Faults are set per direction at run time and act on the
bytes as they pass, in this order: latency, partition, cut, bandwidth; slow close acts
on the end of the stream. Several faults of different types may be active in one
direction at once (latency + bandwidth, say); setting a fault replaces the one of the
same type. The fault set follows Toxiproxy's toxics.

Partition semantics (decided here, and tested): a partition *holds* bytes, nothing passes
and connections stay open. Connections that had bytes held are reset when the partition
heals and the held bytes are dropped, so a client sees a broken connection, as it would
after a real partition long enough for its deadlines to fire. Connections that sent
nothing across the partition carry on, as TCP would. A connection accepted during a
partition is not connected to the target until the partition heals: like a SYN that
cannot get through, its bytes wait in the kernel and then flow normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypeVar

Direction = Literal["up", "down"]
Directions = Literal["up", "down", "both"]
DIRECTIONS: tuple[Direction, ...] = ("up", "down")
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Partition:
    """Blackhole: bytes are held, nothing passes, connections stay open (see module doc)."""


@dataclass(frozen=True)
class Reset:
    """Reset every open connection (RST) and refuse new ones while active.

    A TCP reset kills both directions, so the direction given only scopes clearing.
    """


@dataclass(frozen=True)
class Latency:
    """Delay each chunk by ``ms`` +- uniform ``jitter_ms`` (never below 0); order is kept."""

    ms: float
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"latency must be >= 0, got {self.ms}ms +- {self.jitter_ms}ms")


@dataclass(frozen=True)
class Bandwidth:
    """Limit each connection to ``bytes_per_s`` in this direction."""

    bytes_per_s: int

    def __post_init__(self) -> None:
        if self.bytes_per_s <= 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s, got {self.bytes_per_s}")


@dataclass(frozen=True)
class SlowClose:
    """Delay passing on the end of the stream (FIN) by ``delay_ms``."""

    delay_ms: float

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError(f"slow close delay must be >= 0, got {self.delay_ms}ms")


@dataclass(frozen=True)
class Cut:
    """One-way cut: bytes (and the FIN) in this direction are dropped; the other flows."""


Fault: TypeAlias = Partition | Reset | Latency | Bandwidth | SlowClose | Cut
FaultType: TypeAlias = (
    type[Partition] | type[Reset] | type[Latency] | type[Bandwidth] | type[SlowClose] | type[Cut]
)
_F = TypeVar("_F", Partition, Reset, Latency, Bandwidth, SlowClose, Cut)


@dataclass
class ProxyStats:
    """Counters since the proxy was created. ``faults`` counts what each fault did."""

    bytes_up: int = 0
    bytes_down: int = 0
    connections_total: int = 0
    connections_active: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "connections_total": self.connections_total,
            "connections_active": self.connections_active,
            "faults": dict(self.faults),
        }


@dataclass
class _Chunk:
    data: bytes  # b"" = end of stream
    due: float  # loop time before which it must not be written (latency)


class _Link:
    """One proxied connection: the client side, and the target side once connected."""

    def __init__(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.client_reader = client_reader
        self.client_writer = client_writer
        self.target_reader: asyncio.StreamReader | None = None
        self.target_writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.holding: set[Direction] = set()  # directions with bytes held by a partition

    def ends(self, direction: Direction) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert self.target_reader is not None and self.target_writer is not None
        if direction == "up":
            return self.client_reader, self.target_writer
        return self.target_reader, self.client_writer

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client_writer, self.target_writer) if w is not None]

    def abort(self, rst: bool) -> None:
        for writer in self.writers():
            _abort(writer, rst)

    def kill(self, rst: bool) -> None:
        """Close both sockets now and stop relaying (from outside the link's task)."""
        self.abort(rst)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


def _abort(writer: asyncio.StreamWriter, rst: bool) -> None:
    if rst:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _expand(direction: Directions) -> tuple[Direction, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    raise ValueError(f"direction must be up, down or both, got {direction!r}")


class FaultProxy:
    """TCP proxy from ``listen_host:listen_port`` to ``target_host:target_port``.

    ``rng`` draws latency jitter; pass a seeded ``random.Random`` for repeatable runs.
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        target_host: str,
        target_port: int,
        name: str,
        *,
        rng: random.Random | None = None,
        chunk_size: int = 64 * 1024,
        queue_chunks: int = 64,
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.target_host = target_host
        self.target_port = target_port
        self.name = name
        self.stats = ProxyStats()
        self._rng = rng if rng is not None else random.Random(0)
        self._chunk_size = chunk_size
        self._queue_chunks = queue_chunks
        self._faults: dict[Direction, dict[FaultType, Fault]] = {"up": {}, "down": {}}
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._reachable = asyncio.Event()  # set while no partition is active
        self._reachable.set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen; returns the bound port (useful with ``listen_port=0``)."""
        self._server = await asyncio.start_server(
            self._on_accept, self.listen_host, self.listen_port, reuse_address=True
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self.listen_port

    async def stop(self) -> None:
        """Stop listening and close every connection; waits until all relays have ended."""
        if self._server is not None:
            self._server.close()
        links = list(self._links)
        for link in links:
            link.kill(rst=False)
        tasks = [link.task for link in links if link.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def port(self) -> int:
        """The listening port (the bound one after ``start()``)."""
        return self.listen_port

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    # -- faults ----------------------------------------------------------------------------

    def set_fault(self, direction: Directions, fault: Fault) -> None:
        """Activate ``fault`` in ``direction``, replacing an active fault of the same type."""
        for d in _expand(direction):
            self._faults[d][type(fault)] = fault
        if isinstance(fault, Reset):
            self._reset_all()
        self._update_reachable()

    def clear(self, direction: Directions = "both", fault_type: FaultType | None = None) -> None:
        """Remove faults in ``direction``: all of them, or only those of ``fault_type``."""
        healed: set[Direction] = set()
        for d in _expand(direction):
            active = self._faults[d]
            if Partition in active and fault_type in (None, Partition):
                healed.add(d)
            if fault_type is None:
                active.clear()
            else:
                active.pop(fault_type, None)
        self._reset_held(healed)
        self._update_reachable()

    def heal(self) -> None:
        """Remove every fault in both directions."""
        self.clear("both")

    def faults(self) -> dict[Direction, list[Fault]]:
        return {d: list(self._faults[d].values()) for d in DIRECTIONS}

    def _fault(self, direction: Direction, fault_type: type[_F]) -> _F | None:
        found = self._faults[direction].get(fault_type)
        return found if isinstance(found, fault_type) else None

    def _anywhere(self, fault_type: FaultType) -> bool:
        return any(fault_type in self._faults[d] for d in DIRECTIONS)

    def _reset_all(self) -> None:
        for link in list(self._links):
            self.stats.faults["reset_connections"] += 1
            link.kill(rst=True)

    def _reset_held(self, healed: set[Direction]) -> None:
        # Held bytes are dropped, never delivered late: see the module doc.
        for link in list(self._links):
            if link.holding & healed:
                self.stats.faults["partition_resets"] += 1
                link.kill(rst=True)

    def _update_reachable(self) -> None:
        if self._anywhere(Partition):
            self._reachable.clear()
        else:
            self._reachable.set()

    # -- relaying --------------------------------------------------------------------------

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections_total += 1
        if self._anywhere(Reset):
            self.stats.faults["reset_refused"] += 1
            _abort(writer, rst=True)
            return
        link = _Link(reader, writer)
        self._links.add(link)
        link.task = asyncio.get_running_loop().create_task(self._serve(link), name=f"{self.name}-link")

    async def _serve(self, link: _Link) -> None:
        self.stats.connections_active += 1
        try:
            if await self._connect_target(link):
                await self._relay(link)
        except asyncio.CancelledError:
            pass  # killed by a fault or by stop(): the sockets are already closed
        finally:
            link.abort(rst=False)  # no-op when both sides closed already
            self._links.discard(link)
            self.stats.connections_active -= 1

    async def _connect_target(self, link: _Link) -> bool:
        if not self._reachable.is_set():
            self.stats.faults["partition_waits"] += 1
            await self._reachable.wait()
        try:
            link.target_reader, link.target_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            # The target is down (killed, say): show the client a refused connection.
            self.stats.faults["target_unreachable"] += 1
            link.abort(rst=True)
            return False
        return True

    async def _relay(self, link: _Link) -> None:
        failed = False
        try:
            async with asyncio.TaskGroup() as group:
                for direction in DIRECTIONS:
                    group.create_task(self._pump(link, direction))
        except* OSError:
            failed = True
        if failed:
            link.abort(rst=True)  # pass a broken path on as a reset, like a router would
        else:
            await self._close_gracefully(link)

    async def _close_gracefully(self, link: _Link) -> None:
        for writer in link.writers():
            writer.close()
        for writer in link.writers():
            # Both streams ended, so nothing is left to flush; the bound is only a guard.
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)

    async def _pump(self, link: _Link, direction: Direction) -> None:
        reader, writer = link.ends(direction)
        # A queue between reading and writing lets latency delay chunks without
        # throttling the stream: chunks keep being read while earlier ones wait.
        queue: asyncio.Queue[_Chunk] = asyncio.Queue(self._queue_chunks)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read_side(direction, reader, queue))
            group.create_task(self._write_side(link, direction, writer, queue))

    async def _read_side(self, direction: Direction, reader: asyncio.StreamReader,
                         queue: asyncio.Queue[_Chunk]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await reader.read(self._chunk_size)
            await queue.put(_Chunk(data, loop.time() + self._delay_s(direction)))
            if not data:
                return

    def _delay_s(self, direction: Direction) -> float:
        latency = self._fault(direction, Latency)
        if latency is None:
            return 0.0
        self.stats.faults["latency_chunks"] += 1
        jitter = self._rng.uniform(-latency.jitter_ms, latency.jitter_ms) if latency.jitter_ms else 0.0
        return max(0.0, latency.ms + jitter) / 1000.0

    async def _write_side(self, link: _Link, direction: Direction, writer: asyncio.StreamWriter,
                          queue: asyncio.Queue[_Chunk]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            chunk = await queue.get()
            wait = chunk.due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # chunks are in order, so order is kept
            if self._fault(direction, Partition) is not None:
                await self._hold(link, direction)
            if not chunk.data:
                await self._end_stream(direction, writer)
                return
            if self._fault(direction, Cut) is not None:
                self.stats.faults["cut_bytes"] += len(chunk.data)
                continue
            await self._send(direction, writer, chunk.data)

    async def _hold(self, link: _Link, direction: Direction) -> None:
        """Hold forever: healing the partition resets the link, which cancels this wait."""
        link.holding.add(direction)
        self.stats.faults["partition_holds"] += 1
        await asyncio.get_running_loop().create_future()

    async def _send(self, direction: Direction, writer: asyncio.StreamWriter, data: bytes) -> None:
        bandwidth = self._fault(direction, Bandwidth)
        if bandwidth is None:
            writer.write(data)
            await writer.drain()
            self._count(direction, len(data))
            return
        # Slices of ~50 ms worth keep the rate smooth rather than bursty per chunk.
        step = max(1, bandwidth.bytes_per_s // 20)
        for start in range(0, len(data), step):
            piece = data[start:start + step]
            writer.write(piece)
            await writer.drain()
            self._count(direction, len(piece))
            self.stats.faults["bandwidth_bytes"] += len(piece)
            await asyncio.sleep(len(piece) / bandwidth.bytes_per_s)

    def _count(self, direction: Direction, n: int) -> None:
        if direction == "up":
            self.stats.bytes_up += n
        else:
            self.stats.bytes_down += n

    async def _end_stream(self, direction: Direction, writer: asyncio.StreamWriter) -> None:
        if self._fault(direction, Cut) is not None:
            self.stats.faults["cut_fins"] += 1
            return  # the FIN is lost too: the peer keeps waiting
        slow = self._fault(direction, SlowClose)
        if slow is not None:
            self.stats.faults["slow_closes"] += 1
            await asyncio.sleep(slow.delay_ms / 1000.0)
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still carry a reply
