"""An in-memory participant that follows docs/participants.md, with switches that break one
rule each: what the checker must catch, and name."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import grpc

from coordinator import pb, ppb, ppb_grpc

OK, FAILED = ppb.OUTCOME_OK, ppb.OUTCOME_FAILED
UNDO_REASON = {"compensate": ("execute", "null-compensation"), "abort": ("prepare", "rollback")}
# A broken participant's gap between looking for a call's row and writing it: one database
# round trip of a service that checks, then inserts, without an atomic claim.
CLAIM_GAP_S = 0.05


@dataclass(frozen=True)
class Breaks:
    idempotency: bool = False        # every call runs again: no stored replies
    null_compensation: bool = False  # compensate refunds even when the debit never ran
    hanging_guard: bool = False      # a late execute runs after its compensate
    commit_idempotency: bool = False  # every Commit applies the prepared debit again
    compensate_claim: bool = False   # a first Compensate checks for its row, then refunds: no claim
    late_hanging_guard: bool = False  # a first Execute looks for its undo's row a round trip
                                      # before it claims its own (twins still apply once)
    notice_idempotency: bool = False  # every delivery of a settlement notice is applied


@dataclass
class Accounts:
    """One account's balance; debits of {"amount": n}; a barrier of stored replies."""

    breaks: Breaks = field(default_factory=Breaks)
    balance: int = 1_000
    rows: dict[tuple[str, str, str], tuple[str, ppb.BranchReply]] = field(default_factory=dict)
    prepared: dict[tuple[str, str], int] = field(default_factory=dict)
    notices: int = 0  # settlement notices applied

    def notice(self, req: ppb.BranchRequest) -> ppb.BranchReply:
        """A settlement notice: applied once per (gid, branch) unless broken."""
        key = (req.gid, req.branch, "execute")
        if key in self.rows and not self.breaks.notice_idempotency:
            return self.rows[key][1]
        tx = pb.Transaction.FromString(req.payload)
        self.notices += 1
        reply = ppb.BranchReply(outcome=OK, result=f"noted {tx.gid}".encode())
        self.rows[key] = ("execute", reply)
        return reply

    async def forward(self, op: str, req: ppb.BranchRequest) -> ppb.BranchReply:
        key = (req.gid, req.branch, op)
        if key in self.rows and not self.breaks.idempotency:
            reason, reply = self.rows[key]
            if reason == op or self.breaks.hanging_guard:
                return reply if reason == op else self._run(op, req, key)
            return ppb.BranchReply(outcome=FAILED, message=f"{op} after its undo: hanging request")
        if op == "execute" and self.breaks.late_hanging_guard:
            await asyncio.sleep(CLAIM_GAP_S)  # found no undo; its own claim comes later
            if key in self.rows and self.rows[key][0] == op:  # and that claim is atomic
                return self.rows[key][1]
        return self._run(op, req, key)

    def _run(self, op: str, req: ppb.BranchRequest, key: tuple[str, str, str]) -> ppb.BranchReply:
        amount = int(json.loads(req.payload)["amount"])
        if amount > self.balance:
            reply = ppb.BranchReply(outcome=FAILED, message="insufficient funds")
        elif op == "prepare":
            self.prepared[(req.gid, req.branch)] = amount
            reply = ppb.BranchReply(outcome=OK)
        else:
            self.balance -= amount
            reply = ppb.BranchReply(outcome=OK, result=json.dumps({"balance": self.balance}).encode())
        self.rows[key] = (op, reply)
        return reply

    async def undo(self, op: str, req: ppb.BranchRequest) -> ppb.BranchReply:
        key = (req.gid, req.branch, op)
        if key in self.rows and not self.breaks.idempotency:
            return self.rows[key][1]
        if op == "compensate" and self.breaks.compensate_claim:
            await asyncio.sleep(CLAIM_GAP_S)  # found no row; a round trip before writing one
        forward, reason = UNDO_REASON[op]
        fkey = (req.gid, req.branch, forward)
        ran = fkey in self.rows and self.rows[fkey][0] == forward and self.rows[fkey][1].outcome == OK
        if fkey not in self.rows:
            self.rows[fkey] = (reason, ppb.BranchReply(outcome=OK))
        if ran or (op == "compensate" and self.breaks.null_compensation):
            self._reverse(op, req)
        reply = ppb.BranchReply(outcome=OK)
        self.rows[key] = (op, reply)
        return reply

    def _reverse(self, op: str, req: ppb.BranchRequest) -> None:
        if op == "compensate":
            self.balance += int(json.loads(req.payload)["amount"])
        else:
            self.prepared.pop((req.gid, req.branch), None)

    def commit(self, req: ppb.BranchRequest) -> ppb.BranchReply:
        key = (req.gid, req.branch, "commit")
        if key in self.rows and not self.breaks.commit_idempotency:
            return self.rows[key][1]
        amount = self.prepared.get((req.gid, req.branch))
        if amount is None:
            return ppb.BranchReply(outcome=FAILED, message="unknown branch: never prepared")
        if not self.breaks.commit_idempotency:
            del self.prepared[(req.gid, req.branch)]
        self.balance -= amount
        reply = ppb.BranchReply(outcome=OK)
        self.rows[key] = ("commit", reply)
        return reply


class Servicer(ppb_grpc.ParticipantServicer):
    """Unary methods only (Batch is left UNIMPLEMENTED, as the contract allows)."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def Execute(self, request: ppb.BranchRequest, context: object) -> ppb.BranchReply:
        await asyncio.sleep(0)
        if request.operation == "accounts.balance":  # the read-only observe operation
            return ppb.BranchReply(outcome=OK, result=json.dumps({"balance": self.accounts.balance}).encode())
        if request.operation == "orders.noticed":  # observes the notices applied
            return ppb.BranchReply(outcome=OK, result=json.dumps({"count": self.accounts.notices}).encode())
        if request.operation == "orders.settled":
            return self.accounts.notice(request)
        return await self.accounts.forward("execute", request)

    async def Compensate(self, request: ppb.BranchRequest, context: object) -> ppb.BranchReply:
        return await self.accounts.undo("compensate", request)

    async def Prepare(self, request: ppb.BranchRequest, context: object) -> ppb.BranchReply:
        return await self.accounts.forward("prepare", request)

    async def Commit(self, request: ppb.BranchRequest, context: object) -> ppb.BranchReply:
        return self.accounts.commit(request)

    async def Abort(self, request: ppb.BranchRequest, context: object) -> ppb.BranchReply:
        return await self.accounts.undo("abort", request)


async def serve(accounts: Accounts) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    ppb_grpc.add_ParticipantServicer_to_server(Servicer(accounts), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


SCENARIO = {
    "saga": {
        "action": "accounts.debit", "compensation": "accounts.refund",
        "payload": {"amount": 1}, "refused_payload": {"amount": 10**9},
        "observe": {"operation": "accounts.balance", "field": "balance"},
    },
    "two_phase": {
        "operation": "accounts.debit", "payload": {"amount": 1}, "refused_payload": {"amount": 10**9},
        "observe": {"operation": "accounts.balance", "field": "balance"},
    },
    "notify": {"operation": "orders.settled",
               "observe": {"operation": "orders.noticed", "field": "count"}},
}
