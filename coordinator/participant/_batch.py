"""One ``Batch`` stream of txc.v1.Participant: many branch calls per message, both ways.

Each :class:`~coordinator._proto.txc.v1.participant_pb2.BranchCall` is answered by the host
exactly as its unary method would answer it; how the stream reads, batches its writes and
ends is ``coordinator.rpc._multiplex.AnswerStream``. A caller that cancels the stream loses
only the results: work already started finishes and is recorded, so the unary retry with
the same key gets its reply.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from coordinator._proto.txc.v1 import participant_pb2 as ppb
from coordinator.rpc._multiplex import AnswerStream, BadMessage

log = logging.getLogger("coordinator.participant.host")

Answer = Callable[[ppb.BranchCall], Awaitable[ppb.BranchResult]]
StreamContext = grpc.aio.ServicerContext[bytes, ppb.BranchResultBatch]
BatchStream = AnswerStream[ppb.BranchCall, ppb.BranchResult]


def batch_stream(answer: Answer, context: StreamContext) -> BatchStream:
    """A ``Batch`` stream served through ``answer`` (see ``AnswerStream``)."""
    return AnswerStream(answer, context, _parse, _pack, _last_resort, "Batch")


def _parse(data: bytes, count: int) -> list[ppb.BranchCall]:
    try:
        return list(ppb.BranchCallBatch.FromString(data).calls)
    except DecodeError:
        log.warning("Batch stream: message %d is not a BranchCallBatch; ending the stream", count)
        raise BadMessage(f"message {count} is not a txc.v1.BranchCallBatch") from None


def _pack(results: list[ppb.BranchResult]) -> ppb.BranchResultBatch:
    return ppb.BranchResultBatch(results=results)


def _last_resort(call: ppb.BranchCall, exc: Exception) -> ppb.BranchResult:
    log.error("Batch call %d failed", call.id, exc_info=exc)
    return failed(call.id, grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}")


def failed(call_id: int, code: grpc.StatusCode, message: str) -> ppb.BranchResult:
    """The result of a call that failed the way its unary method would have failed."""
    value: Any = code.value
    return ppb.BranchResult(id=call_id, status_code=int(value[0]), status_message=message)
