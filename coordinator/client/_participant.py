"""A client for one ``txc.v1.Participant`` service: what the coordinator calls, usable by
anyone who wants to call a participant directly (benchmarks, checks, tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc

from .._proto.txc.v1 import participant_pb2 as ppb
from .._proto.txc.v1 import participant_pb2_grpc as ppb_grpc
from ..domain.records import idempotency_key
from ..rpc._channel import channel
from ..rpc._tls import TlsFiles
from ._coordinator import Payload, encode_payload

METHODS = {"execute": "Execute", "compensate": "Compensate", "prepare": "Prepare",
           "commit": "Commit", "abort": "Abort"}
"""Participant method per operation kind (the last part of an idempotency key)."""


class ParticipantClient:
    """``await ParticipantClient("127.0.0.1:7001").call("execute", gid, branch, operation)``.

    Errors are gRPC's own (``grpc.aio.AioRpcError``): an unknown outcome to the caller.
    """

    def __init__(self, address: str, *, timeout_s: float = 5.0, tls_ca: bytes | None = None,
                 tls_identity: TlsFiles | None = None) -> None:
        """``tls_ca``: talk TLS, checking the participant against it; ``tls_identity``: the
        client certificate to present (a participant host requiring mutual TLS)."""
        self.address = address
        self._channel = channel(address, tls_ca, tls_identity)
        self._stub = ppb_grpc.ParticipantStub(self._channel)
        self._timeout_s = timeout_s

    async def __aenter__(self) -> ParticipantClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def reachable(self, within_s: float) -> bool:
        """Whether a connection to the participant is up within ``within_s`` (TLS handshake
        included): no call is made."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), within_s)
        except TimeoutError:
            return False
        return True

    async def send(self, op: str, request: ppb.BranchRequest, timeout_s: float | None = None,
                   metadata: Mapping[str, str] | None = None) -> ppb.BranchReply:
        """One call of ``op`` (execute, compensate, prepare, commit, abort) as given;
        ``metadata``: headers to send with it (the trace context)."""
        try:
            method = getattr(self._stub, METHODS[op])
        except KeyError:
            raise ValueError(f"unknown operation kind {op!r}; one of {sorted(METHODS)}") from None
        reply: ppb.BranchReply = await method(request, timeout=timeout_s or self._timeout_s,
                                              metadata=tuple(metadata.items()) if metadata else None)
        return reply

    async def operations(self, timeout_s: float | None = None) -> ppb.OperationsReply:
        """The operation names the participant serves per method (its optional
        ``Operations`` call; UNIMPLEMENTED from a participant that does not list them)."""
        reply: ppb.OperationsReply = await self._stub.Operations(
            ppb.OperationsRequest(), timeout=timeout_s or self._timeout_s)
        return reply

    def open_batch(self) -> grpc.aio.StreamStreamCall[ppb.BranchCallBatch, ppb.BranchResultBatch]:
        """A ``Batch`` stream: write BranchCallBatch messages, read BranchResultBatch ones."""
        # Called without a request iterator, grpc.aio returns a call to write to and read
        # from; the generated stubs' types only know the iterator form.
        return self._stub.Batch()  # type: ignore[call-arg]

    async def call(self, op: str, gid: str, branch: str, operation: str, payload: Payload = None,
                   *, attempt: int = 1, timeout_s: float | None = None) -> ppb.BranchReply:
        """One call with the key the coordinator would use: ``{gid}/{branch}/{op}``."""
        request = ppb.BranchRequest(gid=gid, branch=branch, operation=operation,
                                    payload=encode_payload(payload),
                                    idempotency_key=idempotency_key(gid, branch, op),
                                    attempt=attempt)
        return await self.send(op, request, timeout_s)
