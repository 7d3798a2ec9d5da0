"""Starts over the coordinator's ``Starts`` stream, for a client that starts many.

A unary start costs the coordinator about as much CPU as a whole participant call; on the
stream, starts that are ready together share one message each way (``_multiplex``). The
client keeps one stream per coordinator address (round robin places each on a
coordinator, as it does unary calls). A coordinator without the method answers
UNIMPLEMENTED: the client remembers it and starts unary from then on.

Failover, as gRPC's retry policy does it for unary starts (the same ``Failover``
attempts and backoff): a stream that breaks (its coordinator paused, gone, cut off by
keepalive) fails the starts waiting on it, and a start answered UNAVAILABLE (the
coordinator lost etcd, or is stopping) is sent again on another stream within its own
deadline. Starts are idempotent on the gid, so sending one again is safe; a start without a
gid is never sent twice (the server names a new transaction each time).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Mapping
from typing import Any

import grpc

from .._proto.txc.v1 import coordinator_pb2 as pb
from .._proto.txc.v1 import coordinator_pb2_grpc as pb_grpc
from ..rpc._multiplex import CallStream, Unsupported, status_of
from ._failover import Failover

Start = pb.StartSagaRequest | pb.StartTwoPhaseRequest


# A coordinator receives a message up to its payload limit plus 1 MiB (2 MiB by default):
# several starts share a message up to this, a larger one goes alone.
MAX_MESSAGE_BYTES = 1024 * 1024


class StartStreams:
    def __init__(self, stub: pb_grpc.CoordinatorStub, streams: int, failover: Failover) -> None:
        self._stub = stub
        self._failover = failover
        self._streams: list[CallStream[pb.StartCall, pb.StartResult] | None] = [None] * streams
        self._next = 0
        self._retired: set[CallStream[pb.StartCall, pb.StartResult]] = set()
        self.unsupported = False

    async def start(self, request: Start, timeout_s: float,
                    metadata: Mapping[str, str]) -> pb.StartResponse | None:
        """The coordinator's reply; None when it has no Starts stream (start unary then).
        Raises grpc.aio.AioRpcError as the unary method would."""
        end = time.monotonic() + timeout_s
        pause = self._failover.initial_backoff_s
        refusals = 0
        while True:
            # A start with a gid goes again until its deadline when its stream breaks (the
            # coordinators may be coming back), and up to max_attempts when a coordinator
            # answers it UNAVAILABLE; one without a gid is never sent twice.
            last = refusals + 1 >= self._failover.max_attempts or not request.gid
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            message = functools.partial(_call, request, max(1, int(remaining * 1000)), metadata)
            stream = self._stream()
            try:
                result = await stream.call(message, remaining, grace_s=0.0)
            except Unsupported:
                self.unsupported = True
                return None
            except TimeoutError:
                raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            except (grpc.aio.AioRpcError, ConnectionError) as exc:  # its stream broke
                if not request.gid:
                    raise _as_rpc_error(exc) from None
            else:
                code = status_of(result.status_code) if result.status_code else grpc.StatusCode.OK
                if code is grpc.StatusCode.OK:
                    return result.response
                if code is not grpc.StatusCode.UNAVAILABLE or last:
                    raise _error(code, result.status_message)
                refusals += 1
                self._retire(stream)
            await asyncio.sleep(random.uniform(0, pause))
            pause = min(pause * 2, self._failover.max_backoff_s)

    def _retire(self, stream: CallStream[pb.StartCall, pb.StartResult]) -> None:
        """Its coordinator answered UNAVAILABLE (no etcd, stopping): send no more starts
        there. A new stream goes where the channel's health checks now point; this one is
        closed once the starts waiting on it are answered."""
        self._streams = [None if s is stream else s for s in self._streams]
        self._retired.add(stream)
        self._reap()

    def _reap(self) -> None:
        for stream in list(self._retired):
            if stream.waiting == 0 or stream.broken is not None:
                self._retired.discard(stream)
                stream.abandon()

    def _stream(self) -> CallStream[pb.StartCall, pb.StartResult]:
        self._reap()
        index = self._next % len(self._streams)
        self._next += 1
        stream = self._streams[index]
        if stream is None or stream.broken is not None:
            # Written to, not iterated; it waits for a coordinator that serves, as unary
            # starts do (wait_for_ready).
            call = self._stub.Starts(wait_for_ready=True)  # type: ignore[call-arg]
            stream = CallStream(call, f"stream {index}", _pack, _unpack, "Starts",
                                size=_bytes, max_bytes=MAX_MESSAGE_BYTES)
            self._streams[index] = stream
        return stream

    async def close(self) -> None:
        for stream in [*self._streams, *self._retired]:
            if stream is not None:
                await stream.close()


def _call(request: Start, timeout_ms: int, metadata: Mapping[str, str],
          call_id: int) -> pb.StartCall:
    if isinstance(request, pb.StartSagaRequest):
        return pb.StartCall(id=call_id, saga=request, timeout_ms=timeout_ms, metadata=metadata)
    return pb.StartCall(id=call_id, two_phase=request, timeout_ms=timeout_ms, metadata=metadata)


def _bytes(call: pb.StartCall) -> int:
    return call.ByteSize()


def _pack(calls: Any) -> pb.StartCallBatch:
    return pb.StartCallBatch(calls=calls)


def _unpack(message: object) -> Any:
    return message.results if isinstance(message, pb.StartResultBatch) else None


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, "")


def _as_rpc_error(exc: BaseException) -> grpc.aio.AioRpcError:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc
    return _error(grpc.StatusCode.UNAVAILABLE, f"the Starts stream broke: {exc}")
