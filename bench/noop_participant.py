"""A participant that answers OK at once, for the benchmarks (run as its own process)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import grpc

from coordinator import ppb, ppb_grpc
from coordinator.server import Context

OK = ppb.BranchReply(outcome=ppb.OUTCOME_OK)


class Noop(ppb_grpc.ParticipantServicer):
    def __init__(self, delay_s: float = 0.0) -> None:
        self._delay_s = delay_s

    async def Operations(self, request: ppb.OperationsRequest,
                         context: Context) -> ppb.OperationsReply:
        """Any name is served: no list, no check of starts."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "serves any operation name")
        raise AssertionError("unreachable: abort raises")

    async def Batch(self, requests: AsyncIterator[ppb.BranchCallBatch],
                    context: Context) -> AsyncIterator[ppb.BranchResultBatch]:
        """Every call of a message answered OK, in one message."""
        async for batch in requests:
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            yield ppb.BranchResultBatch(results=[ppb.BranchResult(id=c.id, reply=OK)
                                                 for c in batch.calls])

    async def Execute(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        if self._delay_s:
            await asyncio.sleep(self._delay_s)  # holds sagas in flight (memory benchmark)
        return OK

    async def Compensate(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return OK

    async def Prepare(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return OK

    async def Commit(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return OK

    async def Abort(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return OK


async def main(port: int, delay_s: float) -> None:
    server = grpc.aio.server()
    ppb_grpc.add_ParticipantServicer_to_server(Noop(delay_s), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))
