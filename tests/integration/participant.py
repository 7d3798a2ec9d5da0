"""A real gRPC participant for the integration tests, steered by each branch's payload.

Payload (JSON): {"refuse": true} refuses the action (prepare: votes no); {"flaky": N} answers
RETRY to the first N attempts of each step; {"sleep": S} delays each execute, {"OP_sleep": S}
each call of OP (prepare, commit, ...); {"undo_flaky": N} and
{"undo_refuse": true} do the same for compensations. Effects are applied once per
idempotency key (as the SDK's barrier would) and every call is recorded. A compensation
of an action that has not taken effect answers OK with null_compensation.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from coordinator import TlsFiles, ppb, ppb_grpc
from coordinator.rpc.net import add_port
from coordinator.server import Context


@dataclass(frozen=True)
class Seen:
    op: str
    key: str
    attempt: int
    at: float
    action_result: bytes = b""  # BranchRequest.action_result as received


@dataclass
class ScriptedParticipant(ppb_grpc.ParticipantServicer):
    calls: list[Seen] = field(default_factory=list)
    effects: Counter[str] = field(default_factory=Counter)
    replies: dict[str, ppb.BranchReply] = field(default_factory=dict)
    tries: Counter[str] = field(default_factory=Counter)
    healed: bool = False  # an operator "fixed" the service: refusals and flakiness stop
    batch: bool = True  # serves the Batch stream; False: answers it UNIMPLEMENTED
    streams: int = 0  # Batch streams opened
    batches: list[int] = field(default_factory=list)  # calls per Batch message received

    server: grpc.aio.Server | None = None
    port: int = 0

    async def start(self, port: int = 0, tls: TlsFiles | None = None) -> ScriptedParticipant:
        self.server = grpc.aio.server()
        ppb_grpc.add_ParticipantServicer_to_server(self, self.server)
        self.port = add_port(self.server, f"127.0.0.1:{port}", tls)

        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ops(self, op: str) -> list[str]:
        """Branch names in the order ``op`` was first called for them."""
        seen: list[str] = []
        for c in self.calls:
            branch = c.key.split("/")[1]
            if c.op == op and branch not in seen:
                seen.append(branch)
        return seen

    async def _handle(self, op: str, request: ppb.BranchRequest, undo: bool) -> ppb.BranchReply:
        self.calls.append(Seen(op, request.idempotency_key, request.attempt, time.monotonic(),
                               request.action_result))
        spec = json.loads(request.payload or b"{}")
        prefix = "undo_" if undo else ""
        delay = spec.get(f"{op}_sleep", spec.get("sleep", 0) if op == "execute" else 0)
        if delay:
            await asyncio.sleep(delay)
        key = request.idempotency_key
        if key in self.replies:
            return self.replies[key]
        self.tries[key] += 1
        if self.healed:
            spec = {}
        if self.tries[key] <= spec.get(f"{prefix}flaky", 0):
            return ppb.BranchReply(outcome=ppb.OUTCOME_RETRY, message="flaky")
        if spec.get(f"{prefix}refuse"):
            reply = ppb.BranchReply(outcome=ppb.OUTCOME_FAILED, message="refused by test")
            if undo:  # like the SDK: a refused undo is not recorded, so a replay runs it again
                return reply
        else:
            self.effects[key] += 1
            # A compensation whose action never took effect here is a null one (as the
            # SDK's barrier says it).
            null = op == "compensate" and key.rsplit("/", 1)[0] + "/execute" not in self.effects
            reply = ppb.BranchReply(outcome=ppb.OUTCOME_OK, result=key.encode(),
                                    null_compensation=null)
        self.replies[key] = reply
        return reply

    async def Execute(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return await self._handle("execute", request, undo=False)

    async def Compensate(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return await self._handle("compensate", request, undo=True)

    async def Prepare(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return await self._handle("prepare", request, undo=False)

    async def Commit(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return await self._handle("commit", request, undo=False)

    async def Abort(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return await self._handle("abort", request, undo=True)

    async def Batch(self, requests: AsyncIterator[ppb.BranchCallBatch],
                    context: Context) -> AsyncIterator[ppb.BranchResultBatch]:
        """The stream, as a participant in any language could write it: each call runs as
        its unary method would; whatever has finished goes out in one message."""
        self.streams += 1
        if not self.batch:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Batch is not implemented")
        done: asyncio.Queue[ppb.BranchResult] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()
        methods = {ppb.CALL_KIND_EXECUTE: self.Execute, ppb.CALL_KIND_COMPENSATE: self.Compensate,
                   ppb.CALL_KIND_PREPARE: self.Prepare, ppb.CALL_KIND_COMMIT: self.Commit,
                   ppb.CALL_KIND_ABORT: self.Abort}

        async def run(call: ppb.BranchCall) -> None:
            try:
                reply = await asyncio.wait_for(methods[call.kind](call.request, context),
                                               call.timeout_ms / 1000)
                done.put_nowait(ppb.BranchResult(id=call.id, reply=reply))
            except TimeoutError:
                done.put_nowait(ppb.BranchResult(id=call.id, status_code=4,
                                                 status_message="deadline exceeded"))

        async def read() -> None:
            async for batch in requests:
                self.batches.append(len(batch.calls))
                for call in batch.calls:
                    task = asyncio.create_task(run(call))
                    running.add(task)
                    task.add_done_callback(running.discard)

        reader = asyncio.create_task(read())
        while not (reader.done() and not running and done.empty()):
            try:
                first = await asyncio.wait_for(done.get(), 0.5)
            except TimeoutError:
                continue
            results = [first]
            while not done.empty():
                results.append(done.get_nowait())
            yield ppb.BranchResultBatch(results=results)

