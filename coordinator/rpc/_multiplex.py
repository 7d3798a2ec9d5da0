"""Many calls on one bidirectional gRPC stream, tagged by id: the participant ``Batch``
stream (coordinator -> participant) and the ``Starts`` stream (client -> coordinator).

A unary gRPC call costs a Python process far more CPU than its few hundred bytes; on a
stream, calls that are ready together share one message. There is no timer: a lone call
is written at once, and calls that arrive while a write is on the wire go in the next one,
so messages grow only under load. A peer that answers the stream UNIMPLEMENTED raises
``Unsupported`` (the caller falls back to the unary methods); a broken stream fails every
call on it, and the caller opens another.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import grpc

MAX_CALLS_PER_MESSAGE = 256
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs lacks it


class _Result(Protocol):
    @property
    def id(self) -> int: ...


C = TypeVar("C")  # one call, as it goes in a message
R = TypeVar("R", bound=_Result)  # one result, as it comes back


class Unsupported(Exception):
    """The peer does not implement the stream."""


class CallStream(Generic[C, R]):
    """One stream: a writer that sends what is queued, a reader that settles the waiting
    calls by id. ``pack`` makes one outgoing message of calls; ``unpack`` gives the results
    of an incoming one (None: not a message of this stream, which ends it)."""

    def __init__(self, call: Any, address: str, pack: Callable[[Sequence[C]], Any],
                 unpack: Callable[[Any], Sequence[R] | None], name: str,
                 size: Callable[[C], int] | None = None, max_bytes: int = 0) -> None:
        """``size`` and ``max_bytes``: a message holds calls up to ``max_bytes`` (the
        peer's receive limit), a larger call goes alone."""
        self._call = call
        self.address = address
        self._pack, self._unpack, self._name = pack, unpack, name
        self._size, self._max_bytes = size, max_bytes
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[R]] = {}
        self._queue: list[C] = []
        self._ready = asyncio.Event()
        self.broken: BaseException | None = None
        self.last_heard = time.monotonic()
        # A context of their own: the loops outlive the call that opened the stream, and
        # must not carry its trace (or log context) into every later call's lines.
        self._tasks = {asyncio.create_task(self._write_loop(), context=contextvars.Context()),
                       asyncio.create_task(self._read_loop(), context=contextvars.Context())}

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def call(self, message: Callable[[int], C], timeout_s: float,
                   grace_s: float = 0.5) -> R:
        """Send ``message(id)`` and wait for its result, up to ``timeout_s`` + ``grace_s``
        (the peer's own deadline answer is more telling than ours)."""
        if self.broken is not None:
            raise self.broken
        call_id = next(self._ids)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        self._queue.append(message(call_id))
        self._ready.set()
        sent = time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s + grace_s)
        except TimeoutError:
            if self.last_heard < sent:  # nothing at all came back: the stream is dead
                # This call's own future first: nobody would read the error set on it.
                self._waiting.pop(call_id, None)
                self._fail(ConnectionError(f"no reply on the {self._name} stream"))
            raise
        finally:
            self._waiting.pop(call_id, None)

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    count = fitting(self._queue, self._size, self._max_bytes)
                    batch, self._queue = self._queue[:count], self._queue[count:]
                    await self._call.write(self._pack(batch))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)

    async def _read_loop(self) -> None:
        try:
            while True:
                message = await self._call.read()
                results = None if message is _EOF else self._unpack(message)
                if results is None:
                    raise ConnectionError(f"the peer ended the {self._name} stream")
                self.last_heard = time.monotonic()
                for result in results:
                    future = self._waiting.get(result.id)
                    if future is not None and not future.done():
                        future.set_result(result)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            exc = Unsupported(self.address)
        elif not isinstance(exc, grpc.aio.AioRpcError | ConnectionError):
            # A write on a call that has just ended (InvalidStateError) and the like: to the
            # callers, the stream broke.
            exc = ConnectionError(f"the {self._name} stream broke: {exc!r}")
        if self.broken is None:
            self.broken = exc
            self._call.cancel()
            for task in self._tasks:
                if task is not asyncio.current_task():
                    task.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)
                # Read here: a caller that gave up on the call (cancelled, timed out)
                # never will, and asyncio would log the error as lost. Waiting callers
                # still get it.
                future.exception()

    def abandon(self) -> None:
        """End the stream now: calls still waiting on it fail (ConnectionError)."""
        self._fail(ConnectionError("closed"))

    async def close(self) -> None:
        self._fail(ConnectionError("closed"))
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def fitting(queue: Sequence[Any], size: Callable[[Any], int] | None, max_bytes: int) -> int:
    """How many of ``queue`` the next message takes: at most MAX_CALLS_PER_MESSAGE and
    ``max_bytes`` (the peer's receive limit), at least one (a larger one goes alone)."""
    limit = min(len(queue), MAX_CALLS_PER_MESSAGE)
    if size is None or not max_bytes:
        return limit
    used = 0
    for count, item in enumerate(queue[:limit]):
        used += size(item)
        if used > max_bytes:
            return max(1, count)
    return limit


def status_of(code: int) -> grpc.StatusCode:
    """The status for a numeric code (UNKNOWN for numbers gRPC does not define)."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN


# -- the serving side -----------------------------------------------------------------


class BadMessage(Exception):
    """A stream message that does not parse as this stream's call message."""


class AnswerStream(Generic[C, R]):
    """Serves one stream: reads call messages, answers each call through ``answer``
    exactly as its unary method would, writes the results as they finish, in any order.

    Writes are batched by back-pressure, not by a timer: while one write is in flight,
    every result that finishes joins the next message, so a lone call is answered at once
    and a busy stream packs many per message. The stream ends (status OK) once the caller
    half-closes it, or ``close`` is called, and every call read so far has its result
    written. A message ``parse`` refuses (BadMessage) stops the reading; the calls already
    read are still answered, then the stream ends with INVALID_ARGUMENT. A caller that
    cancels the stream loses only the results.
    """

    def __init__(self, answer: Callable[[C], Any], context: Any,
                 parse: Callable[[Any, int], Sequence[C]], pack: Callable[[list[R]], Any],
                 fallback: Callable[[C, Exception], R], name: str,
                 size: Callable[[R], int] | None = None, max_bytes: int = 0) -> None:
        """``size`` and ``max_bytes`` bound a message of results as ``CallStream``'s."""
        self._answer, self._context = answer, context
        self._parse, self._pack, self._fallback, self._name = parse, pack, fallback, name
        self._size, self._max_bytes = size, max_bytes
        self._pending: set[asyncio.Task[None]] = set()
        self._out: list[R] = []
        self._wake = asyncio.Event()
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Read no more calls; end the stream once those read are answered."""
        self._closing = True
        self._wake.set()

    async def run(self, requests: Any) -> None:
        reader = asyncio.create_task(self._read(requests))
        reader.add_done_callback(lambda _: self._wake.set())
        try:
            await self._write_until_done(reader)
        finally:
            # A cancelled stream (the caller went away) cancels only the waiting for
            # results; the work itself runs in tasks of its owner and finishes there.
            reader.cancel()
            for task in list(self._pending):
                task.cancel()
        error = reader.exception() if reader.done() and not reader.cancelled() else None
        if isinstance(error, BadMessage):
            await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        elif error is not None:
            raise error

    async def _write_until_done(self, reader: asyncio.Task[None]) -> None:
        while True:
            self._wake.clear()  # before looking, so that no wake-up in between is lost
            if self._out:
                # Whatever finished while the previous write was in flight goes in one message.
                count = fitting(self._out, self._size, self._max_bytes)
                results, self._out = self._out[:count], self._out[count:]
                await self._context.write(self._pack(results))
                continue
            if (reader.done() or self._closing) and not self._pending:
                return
            await self._wake.wait()

    async def _read(self, requests: Any) -> None:
        count = 0
        async for message in requests:
            count += 1
            if self._closing:
                return
            for call in self._parse(message, count):
                task = asyncio.create_task(self._one(call))
                self._pending.add(task)

    async def _one(self, call: C) -> None:
        try:
            result = await self._answer(call)
        except Exception as exc:  # answer maps every failure; this is a last resort
            result = self._fallback(call, exc)
        finally:
            self._pending.discard(asyncio.current_task())
        self._out.append(result)
        self._wake.set()
