"""Calls to participants over gRPC. One attempt per call; retrying is the driver's job.

Every call carries the idempotency key ``{gid}/{branch}/{op}`` (the same on every attempt
and on every coordinator) and the attempt number.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc

from .._proto.txc.v1 import participant_pb2 as ppb
from ..client._participant import METHODS, ParticipantClient
from ..domain.records import BranchPlan, Op, idempotency_key
from ..rpc._tls import TlsFiles

__all__ = ["Answer", "GrpcTransport", "Kind", "Transport", "idempotency_key"]


class Kind(enum.Enum):
    OK = "ok"
    FAILED = "failed"  # a definite business refusal
    UNKNOWN = "unknown"  # RETRY, transport error or timeout: the step may or may not have run
    MISCONFIGURED = "misconfigured"  # UNIMPLEMENTED or no outcome: retrying cannot help


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    result: bytes = b""
    message: str = ""
    may_have_run: bool = True  # MISCONFIGURED only: False when the method does not exist
    null_compensation: bool = False  # OK to Compensate: the action never ran there


class Transport(Protocol):
    async def call(self, gid: str, plan: BranchPlan, op: str, attempt: int,
                   trace: Mapping[str, str], action_result: bytes = b"") -> Answer:
        """One attempt; ``trace``: the attempt's trace context, to send along (may be empty);
        ``action_result``: Compensate only, what the action answered OK with."""
        ...

    async def close(self) -> None: ...


def branch_request(gid: str, plan: BranchPlan, op: str, attempt: int,
                   action_result: bytes = b"") -> ppb.BranchRequest:
    return ppb.BranchRequest(gid=gid, branch=plan.name, operation=operation(plan, op),
                             payload=plan.payload, idempotency_key=idempotency_key(gid, plan.name, op),
                             attempt=attempt, action_result=action_result)


def operation(plan: BranchPlan, op: str) -> str:

    """The operation name a call carries: the compensation on Compensate, else the action."""
    return plan.compensation if op == Op.COMPENSATE else plan.action


def read_reply(address: str, op: str, reply: ppb.BranchReply) -> Answer:
    if reply.outcome == ppb.OUTCOME_OK:
        return Answer(Kind.OK, reply.result, reply.message,
                      null_compensation=reply.null_compensation and op == Op.COMPENSATE)
    if reply.outcome == ppb.OUTCOME_FAILED:
        return Answer(Kind.FAILED, reply.result, reply.message or "refused")
    if reply.outcome == ppb.OUTCOME_RETRY:
        return Answer(Kind.UNKNOWN, message=reply.message or "participant asked to retry")
    detail = f": {reply.message}" if reply.message else ""
    return Answer(Kind.MISCONFIGURED, may_have_run=True, message=(
        f"participant {address} answered {METHODS[op]} without an outcome "
        f"(OUTCOME_UNSPECIFIED){detail}"))


def read_error(address: str, op: str, exc: grpc.aio.AioRpcError) -> Answer:
    return read_status(address, op, exc.code(), exc.details() or "")


def read_status(address: str, op: str, code: grpc.StatusCode, details: str) -> Answer:
    """A call that failed instead of answering: unknown outcome, unless the participant
    has no such method, or does not serve the operation named (UNIMPLEMENTED: nothing ran,
    and retrying cannot help)."""
    status = f"{code.name}: {details}".strip()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Answer(Kind.MISCONFIGURED, may_have_run=False, message=(
            f"misconfigured participant {address}: it does not serve this call of "
            f"txc.v1.Participant/{METHODS[op]} ({status})"))
    return Answer(Kind.UNKNOWN, message=status)


class GrpcTransport:
    """Keeps one client per participant address (bounded, least recently used first out)."""

    def __init__(self, max_channels: int = 256, tls_ca: bytes | None = None,
                 tls_identity: TlsFiles | None = None) -> None:
        """``tls_ca``: call every participant over TLS, checked against these PEM CAs;
        ``tls_identity``: present this client certificate (mutual TLS)."""
        self._tls_identity = tls_identity
        self._clients: collections.OrderedDict[str, ParticipantClient] = collections.OrderedDict()
        self._max = max_channels
        self._tls_ca = tls_ca

    def _client(self, address: str) -> ParticipantClient:
        client = self._clients.get(address)
        if client is None:
            if len(self._clients) >= self._max:
                # grpc.aio closes an evicted channel when collected; close() would cut calls
                # still in flight on it.
                self._clients.popitem(last=False)
            client = ParticipantClient(address, tls_ca=self._tls_ca, tls_identity=self._tls_identity)
            self._clients[address] = client
        else:
            self._clients.move_to_end(address)
        return client

    def client(self, address: str) -> ParticipantClient:
        return self._client(address)

    async def call(self, gid: str, plan: BranchPlan, op: str, attempt: int,
                   trace: Mapping[str, str], action_result: bytes = b"") -> Answer:
        request = branch_request(gid, plan, op, attempt, action_result)
        try:
            reply = await self._client(plan.participant).send(op, request, plan.timeout_s, trace)
        except grpc.aio.AioRpcError as exc:
            return read_error(plan.participant, op, exc)
        return read_reply(plan.participant, op, reply)

    async def operations(self, address: str, timeout_s: float) -> ppb.OperationsReply:
        """``address``'s ``Operations`` answer, on the channel its calls use."""
        return await self._client(address).operations(timeout_s)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
