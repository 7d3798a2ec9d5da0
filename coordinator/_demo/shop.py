"""Two tiny in-memory participants for the demo: accounts (debit/refund) and orders
(create/cancel). They keep replies by idempotency key, so a repeated request has no second
effect, and remember compensations so a late action is refused (what the participant SDK's
barrier does with a database table)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import grpc

from .._proto.txc.v1 import participant_pb2 as ppb
from .._proto.txc.v1 import participant_pb2_grpc as ppb_grpc
from ..server import Context

Handler = Callable[[dict[str, object]], str | None]  # returns a refusal message, or None


class InMemoryParticipant(ppb_grpc.ParticipantServicer):
    async def Batch(self, requests: AsyncIterator[ppb.BranchCallBatch],
                    context: Context) -> AsyncIterator[ppb.BranchResultBatch]:
        """Unary methods only, as a participant in any language may be: the coordinator
        falls back to unary calls for this address (the generated base class would answer
        the same, with a traceback in the log)."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this participant serves unary calls")
        yield ppb.BranchResultBatch()  # never reached: abort raises

    def __init__(self, handlers: dict[str, Handler]) -> None:

        self._handlers = handlers
        self._replies: dict[str, ppb.BranchReply] = {}

    def _run(self, request: ppb.BranchRequest, forward_key: str | None) -> ppb.BranchReply:
        done = self._replies.get(request.idempotency_key)
        if done is not None:
            return done  # duplicate: the same reply, no second effect
        if forward_key is not None and forward_key not in self._replies:
            # Null compensation: the action never ran. Remember it so a late one is refused.
            self._replies[forward_key] = ppb.BranchReply(
                outcome=ppb.OUTCOME_FAILED, message="compensated before it ran")
            reply = ppb.BranchReply(outcome=ppb.OUTCOME_OK, message="nothing to undo")
        else:
            reply = self._apply(request)
        self._replies[request.idempotency_key] = reply
        return reply

    def _apply(self, request: ppb.BranchRequest) -> ppb.BranchReply:
        handler = self._handlers.get(request.operation)
        if handler is None:
            return ppb.BranchReply(outcome=ppb.OUTCOME_FAILED,
                                   message=f"unknown operation {request.operation!r}")
        try:
            refusal = handler(json.loads(request.payload or b"{}"))
        except (ValueError, KeyError, TypeError) as exc:
            return ppb.BranchReply(outcome=ppb.OUTCOME_FAILED, message=f"bad payload: {exc}")
        if refusal:
            return ppb.BranchReply(outcome=ppb.OUTCOME_FAILED, message=refusal)
        return ppb.BranchReply(outcome=ppb.OUTCOME_OK)

    async def Execute(self, request: ppb.BranchRequest,
                      context: Context) -> ppb.BranchReply:
        return self._run(request, None)

    async def Compensate(self, request: ppb.BranchRequest,
                         context: Context) -> ppb.BranchReply:
        return self._run(request, request.idempotency_key.rsplit("/", 1)[0] + "/execute")

    async def Operations(self, request: ppb.OperationsRequest,
                         context: Context) -> ppb.OperationsReply:
        """Its names: a start naming another is refused before anything runs. (Every name
        is served both ways here; compensations are ordinary operations.)"""
        names = sorted(self._handlers)
        return ppb.OperationsReply(execute=names, compensate=names)

    async def Prepare(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return _no_two_phase()

    async def Commit(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return _no_two_phase()

    async def Abort(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return _no_two_phase()


def _no_two_phase() -> ppb.BranchReply:
    return ppb.BranchReply(outcome=ppb.OUTCOME_FAILED, message="demo participants do sagas only")


def accounts(balances: dict[str, int]) -> InMemoryParticipant:
    def debit(p: dict[str, object]) -> str | None:
        account, amount = str(p["account"]), int(str(p["amount"]))
        if balances.get(account, 0) < amount:
            return f"insufficient funds in {account}"
        balances[account] -= amount
        return None

    def refund(p: dict[str, object]) -> str | None:
        balances[str(p["account"])] += int(str(p["amount"]))
        return None

    return InMemoryParticipant({"accounts.debit": debit, "accounts.refund": refund})


def orders(stock: dict[str, int], placed: list[str]) -> InMemoryParticipant:
    def create(p: dict[str, object]) -> str | None:
        item = str(p["item"])
        if stock.get(item, 0) <= 0:
            return f"{item} is out of stock"
        stock[item] -= 1
        placed.append(str(p["order"]))
        return None

    def cancel(p: dict[str, object]) -> str | None:
        stock[str(p["item"])] += 1
        placed.remove(str(p["order"]))
        return None

    return InMemoryParticipant({"orders.create": create, "orders.cancel": cancel})
