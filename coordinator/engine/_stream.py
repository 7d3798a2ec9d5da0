"""Participant calls over the ``Batch`` stream: many calls per message, one stream per
participant address.

A unary gRPC call costs this process far more CPU than its few hundred bytes (measured
~190 µs as the caller); on a stream, calls that are ready together share one message.
There is no timer: a lone call is written at once, and calls that arrive while a write is
on the wire go in the next one, so batches grow only under load.

A participant that answers the stream with UNIMPLEMENTED (one that implements only the
unary methods, in any language) is remembered per address and called unary from then on;
the calls that were waiting go unary too (the participant ran none of them). A call with
no result by its deadline, or lost with its stream, is an unknown outcome, as a unary
timeout is: the driver retries it with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import time
from collections.abc import Mapping

import grpc

from .._proto.txc.v1 import participant_pb2 as ppb
from .._tls import TlsFiles
from ..domain.records import BranchPlan, Op
from ._dispatch import Answer, GrpcTransport, Kind, branch_request, read_reply, read_status

log = logging.getLogger("txcoord.engine")

KINDS: dict[str, ppb.CallKind.ValueType] = {
    Op.EXECUTE: ppb.CALL_KIND_EXECUTE, Op.COMPENSATE: ppb.CALL_KIND_COMPENSATE,
    Op.PREPARE: ppb.CALL_KIND_PREPARE, Op.COMMIT: ppb.CALL_KIND_COMMIT, Op.ABORT: ppb.CALL_KIND_ABORT,
}
MAX_CALLS_PER_MESSAGE = 256
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs lacks it



class Unsupported(Exception):
    """The participant does not implement ``Batch``."""


class _Stream:
    """One ``Batch`` stream: a writer that sends what is queued, a reader that settles the
    waiting calls by id. Broken streams fail their calls and are replaced by the caller."""

    def __init__(self, call: grpc.aio.StreamStreamCall[ppb.BranchCallBatch, ppb.BranchResultBatch],
                 address: str) -> None:
        self._call = call
        self.address = address
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[ppb.BranchResult]] = {}
        self._queue: list[ppb.BranchCall] = []
        self._ready = asyncio.Event()
        self.broken: BaseException | None = None
        self.last_heard = time.monotonic()
        # A context of their own: the loops outlive the call that opened the stream, and
        # must not carry its trace (or log context) into every later call's lines.
        self._tasks = {asyncio.create_task(self._write_loop(), context=contextvars.Context()),
                       asyncio.create_task(self._read_loop(), context=contextvars.Context())}

    async def call(self, kind: ppb.CallKind.ValueType, request: ppb.BranchRequest,
                   timeout_s: float, trace: Mapping[str, str]) -> ppb.BranchResult:
        if self.broken is not None:
            raise self.broken
        call_id = next(self._ids)
        future: asyncio.Future[ppb.BranchResult] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        self._queue.append(ppb.BranchCall(id=call_id, kind=kind, request=request,
                                          timeout_ms=max(1, int(timeout_s * 1000)),
                                          metadata=trace))
        self._ready.set()
        sent = time.monotonic()
        try:
            # A little past the participant's own deadline: its DEADLINE_EXCEEDED answer
            # is more telling than ours.
            return await asyncio.wait_for(asyncio.shield(future), timeout_s + 0.5)
        except TimeoutError:
            if self.last_heard < sent:  # nothing at all came back: the stream is dead
                # This call's own future first: nobody would read the error set on it.
                self._waiting.pop(call_id, None)
                self._fail(ConnectionError("no reply on the Batch stream"))
            raise
        finally:
            self._waiting.pop(call_id, None)

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    batch, self._queue = (self._queue[:MAX_CALLS_PER_MESSAGE],
                                          self._queue[MAX_CALLS_PER_MESSAGE:])
                    await self._call.write(ppb.BranchCallBatch(calls=batch))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)

    async def _read_loop(self) -> None:
        try:
            while True:
                message = await self._call.read()
                if message is _EOF or not isinstance(message, ppb.BranchResultBatch):
                    raise ConnectionError("the participant ended the Batch stream")
                self.last_heard = time.monotonic()
                for result in message.results:
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

    async def close(self) -> None:
        self._fail(ConnectionError("closed"))
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class BatchTransport:
    """A Transport over ``Batch`` streams, unary for participants without them."""

    def __init__(self, max_channels: int = 256, tls_ca: bytes | None = None,
                 tls_identity: TlsFiles | None = None) -> None:
        self._unary = GrpcTransport(max_channels=max_channels, tls_ca=tls_ca,
                                    tls_identity=tls_identity)
        self._streams: dict[str, _Stream] = {}
        self._unary_only: set[str] = set()

    async def call(self, gid: str, plan: BranchPlan, op: str, attempt: int,
                   trace: Mapping[str, str]) -> Answer:
        address = plan.participant
        if address in self._unary_only:
            return await self._unary.call(gid, plan, op, attempt, trace)
        request = branch_request(gid, plan, op, attempt)
        try:
            result = await self._stream(address).call(KINDS[op], request, plan.timeout_s, trace)
        except Unsupported:
            if address not in self._unary_only:
                log.info("participant %s has no Batch stream: calling it unary", address,
                         extra={"gid": gid, "branch": plan.name, "op": op, "attempt": attempt})
                self._unary_only.add(address)
            return await self._unary.call(gid, plan, op, attempt, trace)
        except TimeoutError:
            return Answer(Kind.UNKNOWN, message="DEADLINE_EXCEEDED: no result on the Batch stream")
        except grpc.aio.AioRpcError as exc:  # the stream failed: every call on it is unknown
            return Answer(Kind.UNKNOWN, message=f"{exc.code().name}: {exc.details() or ''}")
        except Exception as exc:
            return Answer(Kind.UNKNOWN, message=f"UNAVAILABLE: {exc or type(exc).__name__}")
        if result.status_code:
            return read_status(address, op, _status(result.status_code), result.status_message)
        return read_reply(address, op, result.reply)

    def _stream(self, address: str) -> _Stream:
        stream = self._streams.get(address)
        if stream is None or stream.broken is not None:
            stream = _Stream(self._unary.client(address).open_batch(), address)
            self._streams[address] = stream
        return stream

    async def close(self) -> None:
        for stream in self._streams.values():
            await stream.close()
        self._streams.clear()
        await self._unary.close()


def _status(code: int) -> grpc.StatusCode:
    """The status for a numeric code (UNKNOWN for numbers gRPC does not define)."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN
