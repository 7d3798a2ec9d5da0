"""A participant that answers OK at once, for the benchmarks (run as its own process)."""

from __future__ import annotations

import asyncio
import sys

import grpc

from coordinator._proto.txc.v1 import participant_pb2 as ppb
from coordinator._proto.txc.v1 import participant_pb2_grpc as ppb_grpc
from coordinator.server._context import Context

OK = ppb.BranchReply(outcome=ppb.OUTCOME_OK)


class Noop(ppb_grpc.ParticipantServicer):
    async def Execute(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return OK

    async def Compensate(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return OK

    async def Prepare(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return OK

    async def Commit(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return OK

    async def Abort(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return OK


async def main(port: int) -> None:
    server = grpc.aio.server()
    ppb_grpc.add_ParticipantServicer_to_server(Noop(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
