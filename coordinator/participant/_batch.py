"""One ``Batch`` stream of txc.v1.Participant: many branch calls per message, both ways.

The stream only carries calls: each :class:`~coordinator._proto.txc.v1.participant_pb2.BranchCall`
is answered by the host exactly as its unary method would answer it (``answer``), and the
results are written as they finish, in any order. Writes are batched by back-pressure, not
by a timer: while one write is in flight, every result that finishes joins the next
message, so a lone call is written at once and a busy stream packs many per message.

The stream ends (status OK) once the caller half-closes it, or the host stops, and every
call read so far has its result written. A message that is not a ``BranchCallBatch``
stops the reading; the calls already read are still answered, then the stream ends with
INVALID_ARGUMENT. A caller that cancels the stream loses only the results: work already
started finishes and is recorded, so the unary retry with the same key gets its reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from coordinator._proto.txc.v1 import participant_pb2 as ppb

log = logging.getLogger("coordinator.participant.host")

Answer = Callable[[ppb.BranchCall], Awaitable[ppb.BranchResult]]
StreamContext = grpc.aio.ServicerContext[bytes, ppb.BranchResultBatch]


class BadMessage(Exception):
    """A stream message that does not parse as a BranchCallBatch."""


class BatchStream:
    """Reads call batches, answers each call through ``answer``, writes result batches."""

    def __init__(self, answer: Answer, context: StreamContext) -> None:
        self._answer = answer
        self._context = context
        self._pending: set[asyncio.Task[None]] = set()
        self._out: list[ppb.BranchResult] = []
        self._wake = asyncio.Event()
        self._closing = False

    def close(self) -> None:
        """Read no more calls; end the stream once those read are answered (host stop)."""
        self._closing = True
        self._wake.set()

    async def run(self, requests: AsyncIterable[bytes]) -> None:
        reader = asyncio.create_task(self._read(requests))
        reader.add_done_callback(lambda _: self._wake.set())
        try:
            await self._write_until_done(reader)
        finally:
            # A cancelled stream (the caller went away) cancels only the waiting for
            # results; the work itself runs in the host's own tasks and finishes there.
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
                results, self._out = self._out, []
                await self._context.write(ppb.BranchResultBatch(results=results))
                continue
            if (reader.done() or self._closing) and not self._pending:
                return
            await self._wake.wait()

    async def _read(self, requests: AsyncIterable[bytes]) -> None:
        count = 0
        async for data in requests:
            count += 1
            if self._closing:
                return
            try:
                batch = ppb.BranchCallBatch.FromString(data)
            except DecodeError:
                log.warning("Batch stream: message %d is not a BranchCallBatch; ending the stream", count)
                raise BadMessage(f"message {count} is not a txc.v1.BranchCallBatch") from None
            for call in batch.calls:
                self._start(call)

    def _start(self, call: ppb.BranchCall) -> None:
        task = asyncio.create_task(self._one(call))
        self._pending.add(task)

    async def _one(self, call: ppb.BranchCall) -> None:
        try:
            result = await self._answer(call)
        except Exception as exc:  # answer maps every failure; this is a last resort
            log.error("Batch call %d failed", call.id, exc_info=exc)
            result = failed(call.id, grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}")
        finally:
            self._pending.discard(asyncio.current_task())
        self._out.append(result)
        self._wake.set()


def failed(call_id: int, code: grpc.StatusCode, message: str) -> ppb.BranchResult:
    """The result of a call that failed the way its unary method would have failed."""
    value: Any = code.value
    return ppb.BranchResult(id=call_id, status_code=int(value[0]), status_message=message)
