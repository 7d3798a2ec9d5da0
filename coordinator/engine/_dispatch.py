"""Calls to participants over gRPC. One attempt per call; retrying is the driver's job.

Every call carries the idempotency key ``{gid}/{branch}/{op}`` (the same on every attempt
and on every coordinator) and the attempt number.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass
from typing import Protocol

import grpc

from .._channel import channel as open_channel
from .._proto.txc.v1 import participant_pb2 as ppb
from .._proto.txc.v1 import participant_pb2_grpc as ppb_grpc
from ..domain.records import BranchPlan, Op


class Kind(enum.Enum):
    OK = "ok"
    FAILED = "failed"  # a definite business refusal
    UNKNOWN = "unknown"  # RETRY, transport error or timeout: the step may or may not have run


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    result: bytes = b""
    message: str = ""


def idempotency_key(gid: str, branch: str, op: str) -> str:
    return f"{gid}/{branch}/{op}"


class Transport(Protocol):
    async def call(self, gid: str, plan: BranchPlan, op: str, attempt: int) -> Answer: ...

    async def close(self) -> None: ...


_METHODS: dict[str, str] = {
    Op.EXECUTE: "Execute",
    Op.COMPENSATE: "Compensate",
    Op.PREPARE: "Prepare",
    Op.COMMIT: "Commit",
    Op.ABORT: "Abort",
}


class GrpcTransport:
    """Keeps one channel per participant address (bounded, least recently used first out)."""

    def __init__(self, max_channels: int = 256, tls_ca: bytes | None = None) -> None:
        """``tls_ca``: call every participant over TLS, checked against these PEM CAs."""
        self._stubs: collections.OrderedDict[str, tuple[grpc.aio.Channel, ppb_grpc.ParticipantStub]]
        self._stubs = collections.OrderedDict()
        self._max = max_channels
        self._tls_ca = tls_ca

    def _stub(self, address: str) -> ppb_grpc.ParticipantStub:
        entry = self._stubs.get(address)
        if entry is None:
            if len(self._stubs) >= self._max:
                _, (old, _) = self._stubs.popitem(last=False)
                # grpc.aio closes it when collected; close() would cut calls still in flight.
                del old
            channel = open_channel(address, self._tls_ca)
            entry = (channel, ppb_grpc.ParticipantStub(channel))
            self._stubs[address] = entry
        else:
            self._stubs.move_to_end(address)
        return entry[1]

    async def call(self, gid: str, plan: BranchPlan, op: str, attempt: int) -> Answer:
        operation = plan.action if op in (Op.EXECUTE, Op.PREPARE) else plan.compensation
        if op in (Op.COMMIT, Op.ABORT):
            operation = plan.action
        request = ppb.BranchRequest(
            gid=gid, branch=plan.name, operation=operation, payload=plan.payload,
            idempotency_key=idempotency_key(gid, plan.name, op), attempt=attempt,
        )
        method = getattr(self._stub(plan.participant), _METHODS[op])
        try:
            reply = await method(request, timeout=plan.timeout_s)
        except grpc.aio.AioRpcError as exc:
            return Answer(Kind.UNKNOWN, message=f"{exc.code().name}: {exc.details() or ''}".strip())
        if reply.outcome == ppb.OUTCOME_OK:
            return Answer(Kind.OK, reply.result, reply.message)
        if reply.outcome == ppb.OUTCOME_FAILED:
            return Answer(Kind.FAILED, reply.result, reply.message or "refused")
        return Answer(Kind.UNKNOWN, message=reply.message or "participant asked to retry")

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close(None)
        self._stubs.clear()
