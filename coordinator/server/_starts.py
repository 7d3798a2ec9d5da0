"""The ``Starts`` stream of txc.v1.Coordinator: many starts per message, both ways.

Each StartCall is answered exactly as StartSaga or StartTwoPhase would answer it, as the
servicer's ``answer`` gives it; reading, batching the replies and ending the stream are
``coordinator.rpc._multiplex.AnswerStream``'s. A caller that cancels the stream loses only the
replies: the transactions it started run on, and a start sent again finds them (idempotent
on gid).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..rpc._multiplex import MAX_CALLS_PER_MESSAGE, AnswerStream, BadMessage

log = logging.getLogger("txcoord.server")

Metadata = Iterable[tuple[str, str | bytes]] | None
MAX_PENDING_PER_STREAM = 4096  # starts one stream may have waiting at once (memory bound)
# A message of replies stays under gRPC's default 4 MiB receive limit (a reply to a large
# start goes alone, as its unary reply would).
MAX_REPLY_BYTES = 3 * 1024 * 1024


def starts_stream(answer: Callable[[pb.StartCall], Awaitable[pb.StartResult]],
                  context: Any) -> AnswerStream[pb.StartCall, pb.StartResult]:
    stream: AnswerStream[pb.StartCall, pb.StartResult]

    def parse(message: pb.StartCallBatch, count: int) -> list[pb.StartCall]:
        if not isinstance(message, pb.StartCallBatch):
            raise BadMessage(f"message {count} is not a txc.v1.StartCallBatch")
        if len(message.calls) > MAX_CALLS_PER_MESSAGE:
            raise BadMessage(f"message {count}: calls: at most {MAX_CALLS_PER_MESSAGE} a message")
        return list(message.calls)

    async def bounded(call: pb.StartCall) -> pb.StartResult:
        if stream.pending > MAX_PENDING_PER_STREAM:
            return start_failed(call.id, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"this stream has {MAX_PENDING_PER_STREAM} starts waiting: "
                                "wait for some, or open another stream")
        return await answer(call)

    stream = AnswerStream(bounded, context, parse, _pack, _last_resort, "Starts",
                          size=_bytes, max_bytes=MAX_REPLY_BYTES)
    return stream


def start_failed(call_id: int, code: grpc.StatusCode, message: str) -> pb.StartResult:
    """The result of a start that failed the way its unary method would have failed."""
    value: Any = code.value
    return pb.StartResult(id=call_id, status_code=int(value[0]), status_message=message)


def _bytes(result: pb.StartResult) -> int:
    return result.ByteSize()


def _pack(results: list[pb.StartResult]) -> pb.StartResultBatch:
    return pb.StartResultBatch(results=results)


def _last_resort(call: pb.StartCall, exc: Exception) -> pb.StartResult:
    log.error("Starts call %d failed", call.id, exc_info=exc)
    return start_failed(call.id, grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}")
