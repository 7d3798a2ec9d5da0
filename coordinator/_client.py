"""A typed Python client for the Coordinator service, so nobody hand-writes protobuf."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.duration_pb2 import Duration

from ._channel import channel
from ._proto.txc.v1 import coordinator_pb2 as pb
from ._proto.txc.v1 import coordinator_pb2_grpc as pb_grpc


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def encode_payload(payload: bytes | str | Mapping[str, Any] | None) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class Retry:
    max_attempts: int = 0  # 0 = until the transaction deadline
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 10.0
    multiplier: float = 2.0

    def to_proto(self) -> pb.RetryPolicy:
        return pb.RetryPolicy(max_attempts=self.max_attempts,
                              initial_backoff=_duration(self.initial_backoff_s),
                              max_backoff=_duration(self.max_backoff_s),
                              multiplier=self.multiplier)


@dataclass(frozen=True, slots=True)
class Step:
    """One branch of a saga: an action on a participant and the compensation that undoes it."""

    name: str
    participant: str
    action: str
    compensation: str = ""
    payload: bytes | str | Mapping[str, Any] | None = None
    after: Sequence[str] = ()
    timeout_s: float | None = None
    retry: Retry | None = None

    def to_proto(self) -> pb.Branch:
        return pb.Branch(name=self.name, participant=self.participant, action=self.action,
                         compensation=self.compensation, payload=encode_payload(self.payload),
                         after=list(self.after), timeout=_duration(self.timeout_s),
                         retry=self.retry.to_proto() if self.retry else None)


@dataclass(frozen=True, slots=True)
class Saga:
    """A saga plan: ``Saga(gid="t-1", steps=[Step(...), ...])``."""

    steps: Sequence[Step]
    gid: str = ""
    concurrent: bool = False
    timeout_s: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_proto(self, wait: bool = False) -> pb.StartSagaRequest:
        return pb.StartSagaRequest(gid=self.gid, branches=[s.to_proto() for s in self.steps],
                                   concurrent=self.concurrent, timeout=_duration(self.timeout_s),
                                   wait=wait, labels=dict(self.labels))


class CoordinatorClient:
    """``async with CoordinatorClient("127.0.0.1:7070") as c: await c.start_saga(saga)``."""

    def __init__(self, address: str, *, timeout_s: float = 10.0, tls_ca: bytes | None = None) -> None:
        """``tls_ca``: PEM certificates to check a coordinator serving TLS against."""
        self._channel = channel(address, tls_ca)
        self._stub = pb_grpc.CoordinatorStub(self._channel)
        self._timeout_s = timeout_s

    async def __aenter__(self) -> CoordinatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def start_saga(self, saga: Saga, *, wait: bool = False,
                         timeout_s: float | None = None) -> pb.StartResponse:
        """Start (idempotent on gid). ``wait=True`` returns once the saga has settled."""
        response: pb.StartResponse = await self._stub.StartSaga(
            saga.to_proto(wait), timeout=timeout_s or self._timeout_s)
        return response

    async def get(self, gid: str) -> pb.Transaction:
        tx: pb.Transaction = await self._stub.GetTransaction(
            pb.GetTransactionRequest(gid=gid), timeout=self._timeout_s)
        return tx

    async def list(self, *, states: Sequence[int] = (), protocol: int = 0, page_size: int = 50,
                   page_token: str = "",
                   labels: Mapping[str, str] | None = None) -> pb.ListTransactionsResponse:
        request = pb.ListTransactionsRequest(states=list(states), protocol=protocol,  # type: ignore[arg-type]
                                             page_size=page_size, page_token=page_token,
                                             labels=dict(labels or {}))
        response: pb.ListTransactionsResponse = await self._stub.ListTransactions(
            request, timeout=self._timeout_s)
        return response
