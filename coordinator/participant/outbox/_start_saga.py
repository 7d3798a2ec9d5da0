"""The relay's sender for ``txc.start_saga`` messages: StartSaga on the coordinator."""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError

from coordinator._proto.txc.v1 import coordinator_pb2 as cpb
from coordinator.client._coordinator import CoordinatorClient
from coordinator.participant._db.errors import PermanentDeliveryError
from coordinator.participant.outbox._messages import OutboxMessage
from coordinator.rpc._tls import TlsFiles

# The coordinator will give the same answer however often it is asked: a malformed plan,
# or a gid already used by a different plan. Everything else (UNAVAILABLE, deadlines,
# overload) may pass, so the relay tries again later.
_PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS})


class StartSagaSender:
    """Delivers StartSagaRequest messages. StartSaga is idempotent on gid, so a redelivery
    after a crash finds the saga already there (``created=false``) and changes nothing."""

    def __init__(self, target: str | CoordinatorClient, *, timeout_s: float = 10.0,
                 tls_ca: bytes | None = None, tls_identity: TlsFiles | None = None) -> None:
        """``target``: "host:port" of a coordinator (``tls_ca``: PEM CAs when it serves
        TLS; ``tls_identity``: the client certificate when it requires one), or a client of
        your own; ``timeout_s``: deadline of one StartSaga call."""
        self._timeout_s = timeout_s
        self._own_client = isinstance(target, str)
        self._client = (CoordinatorClient(target, timeout_s=timeout_s, tls_ca=tls_ca,
                                          tls_identity=tls_identity)
                        if isinstance(target, str) else target)

    async def __call__(self, message: OutboxMessage) -> None:
        try:
            request = cpb.StartSagaRequest.FromString(message.payload)
        except DecodeError:
            raise PermanentDeliveryError(f"outbox message {message.id} is not a StartSagaRequest") from None
        try:
            await self._client.start_saga(request, timeout_s=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _PERMANENT:
                raise PermanentDeliveryError(f"{exc.code().name}: {exc.details()}") from None
            raise

    async def close(self) -> None:
        """Close the client if this sender opened it."""
        if self._own_client:
            await self._client.close()
