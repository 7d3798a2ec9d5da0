"""A StartSaga receiver for the outbox tests: a real gRPC server standing in for the
coordinator."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import grpc

from coordinator import pb as cpb


@dataclass
class SagaReceiver:
    """A txc.v1.Coordinator that only answers StartSaga, idempotent on gid like the real
    one, and records every call. ``fail_first`` calls answer UNAVAILABLE; gids in
    ``invalid`` answer INVALID_ARGUMENT; gids in ``hold`` wait for ``release``."""

    fail_first: int = 0
    invalid: set[str] = field(default_factory=set)
    hold: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)
    created: Counter[str] = field(default_factory=Counter)
    traceparents: dict[str, str] = field(default_factory=dict)  # gid -> the call's, if any
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: grpc.aio.Server | None = None
    port: int = 0

    async def _start_saga(self, request: cpb.StartSagaRequest,
                          context: grpc.aio.ServicerContext) -> cpb.StartResponse:  # type: ignore[type-arg]
        self.calls[request.gid] += 1
        for key, value in context.invocation_metadata() or ():
            if key == "traceparent":
                self.traceparents[request.gid] = str(value)
        if self.fail_first > 0:
            self.fail_first -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "coordinator warming up")
        if request.gid in self.invalid:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "branches[0].participant: empty")
        if request.gid in self.hold:
            await self.release.wait()
        fresh = self.created[request.gid] == 0
        if fresh:
            self.created[request.gid] += 1
        return cpb.StartResponse(
            transaction=cpb.Transaction(gid=request.gid), created=fresh)

    async def start(self) -> str:
        handler = grpc.method_handlers_generic_handler("txc.v1.Coordinator", {
            "StartSaga": grpc.unary_unary_rpc_method_handler(
                self._start_saga,
                request_deserializer=cpb.StartSagaRequest.FromString,
                response_serializer=cpb.StartResponse.SerializeToString,
            ),
        })
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers([handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            await self.server.stop(0)
