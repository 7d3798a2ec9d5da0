"""The transfer client: issues transfers at a fixed rate in one mode and logs what it was told.

Modes: ``none`` is the article's code (debit in PostgreSQL, then insert the order in MariaDB,
no coordination); ``saga`` and ``2pc`` ask a coordinator. Every transfer has an id and ends
as ok / failed / unknown, with its start and end times.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator import CoordinatorClient, Retry, Saga, Step, TwoPhase, pb
from coordinator.participant import Refused

from .workload.services import Transfer, create_order, debit

Told = Literal["ok", "failed", "unknown"]
Mode = Literal["none", "saga", "2pc"]


@dataclass(frozen=True)
class Outcome:
    transfer: Transfer
    mode: str
    told: Told
    started_at: float
    ended_at: float
    detail: str = ""


OVERDRAFT_SHARE = 0.03  # transfers asking for more than any balance: business failures


def transfers(seed: int, count: int, prefix: str, accounts: int, max_amount: int,
              overdraft: int) -> list[Transfer]:
    """The same seed gives the same accounts and amounts in every mode; ``prefix`` keeps
    ids (gids) unique across runs, as real transfer ids are. A few transfers ask for
    ``overdraft`` (more than the balance) so refusals happen all run long."""
    rng = random.Random(seed)
    plan = []
    for i in range(count):
        account = f"acct-{rng.randrange(accounts)}"
        amount = overdraft if rng.random() < OVERDRAFT_SHARE else rng.randint(1, max_amount)
        plan.append(Transfer(f"{prefix}{i}", account, amount))
    return plan


class UncoordinatedClient:
    """The article's transfer: two local transactions, nothing tying them together."""

    def __init__(self, accounts_db: AsyncEngine, orders_db: AsyncEngine, timeout_s: float) -> None:
        self._accounts, self._orders, self._timeout = accounts_db, orders_db, timeout_s

    async def transfer(self, t: Transfer) -> tuple[Told, str]:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._accounts.begin() as conn:
                    await debit(conn, t)
        except Refused as exc:
            return "failed", str(exc)
        except Exception as exc:
            return "unknown", type(exc).__name__
        try:
            async with asyncio.timeout(self._timeout):
                async with self._orders.begin() as conn:
                    await create_order(conn, t)
        except Refused as exc:
            return "failed", f"order refused after the debit: {exc}"
        except Exception as exc:
            return "failed", f"order failed after the debit: {type(exc).__name__}"
        return "ok", ""


def told_for(code: grpc.StatusCode) -> tuple[Told, str]:
    """A start that ended in an error. A coordinator answers RESOURCE_EXHAUSTED before it
    writes anything: failed, and by the fault, not the business. (Should an earlier
    attempt of the library's have started the transfer elsewhere, the checker counts it
    as a phantom.) Any other error may or may not have started it: unknown."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "failed", "refused: coordinator at capacity"
    return "unknown", code.name


def verdict_of(tx: pb.Transaction) -> tuple[Told, str]:
    """What a start's reply says: ok, failed with the transaction's error (a business
    refusal, or a deadline that compensated or aborted it), or unknown (the wait ran out
    before it settled)."""
    if tx.state == pb.TX_STATE_COMMITTED:
        return "ok", ""
    if tx.state in (pb.TX_STATE_COMPENSATED, pb.TX_STATE_ABORTED):
        return "failed", tx.error[:120]
    return "unknown", f"still {pb.TxState.Name(tx.state)} at the deadline"


class CoordinatedClient:
    """Starts each transfer as a saga or a 2PC transaction and waits for the verdict.

    One :class:`CoordinatorClient` over every coordinator: the library fails a start over
    to another coordinator when the first cannot be reached or stops answering (a start is
    idempotent on the gid), so one call per transfer is all the client makes.
    """

    def __init__(self, coordinators: Sequence[str], accounts: str, orders: str, mode: Mode,
                 timeout_s: float) -> None:
        self._client = CoordinatorClient(list(coordinators), timeout_s=timeout_s)
        self._accounts, self._orders, self._mode, self._timeout = accounts, orders, mode, timeout_s

    async def close(self) -> None:
        await self._client.close()

    async def transfer(self, t: Transfer) -> tuple[Told, str]:
        try:
            if self._mode == "saga":
                reply = await self._client.start_saga(self._saga(t), wait=True,
                                                      timeout_s=self._timeout)
            else:
                reply = await self._client.start_two_phase(self._two_phase(t), wait=True,
                                                           timeout_s=self._timeout)
        except grpc.aio.AioRpcError as exc:
            return told_for(exc.code())
        return verdict_of(reply.transaction)

    def _steps(self, t: Transfer, saga: bool) -> list[Step]:
        retry = Retry(initial_backoff_s=0.05, max_backoff_s=1.0)
        return [
            Step("debit", self._accounts, "accounts.debit", "accounts.refund" if saga else "",
                 t.encode(), retry=retry, timeout_s=2.0),
            Step("order", self._orders, "orders.create", "orders.cancel" if saga else "",
                 t.encode(), retry=retry, timeout_s=2.0),
        ]

    def _saga(self, t: Transfer) -> Saga:
        return Saga(self._steps(t, True), gid=t.transfer_id, timeout_s=int(self._timeout))

    def _two_phase(self, t: Transfer) -> TwoPhase:
        return TwoPhase(self._steps(t, False), gid=t.transfer_id, timeout_s=int(self._timeout))


async def issue(client: UncoordinatedClient | CoordinatedClient, plan: Sequence[Transfer],
                rate: float, mode: str, hard_timeout_s: float) -> tuple[list[Outcome],
                                                                   set[asyncio.Task[Any]]]:
    """Start one transfer every 1/rate seconds (open loop) and collect the outcomes.

    A transfer still hanging after ``hard_timeout_s`` (a driver stuck on a partitioned
    socket ignores cancellation while it cleans up) is told "unknown" and left running; its
    task is returned so the caller can reap it once the links are healed.
    """
    outcomes: list[Outcome] = []
    stragglers: set[asyncio.Task[Any]] = set()

    async def one(t: Transfer) -> None:
        started = time.time()
        work = asyncio.create_task(client.transfer(t))
        done, _ = await asyncio.wait({work}, timeout=hard_timeout_s)
        if done:
            told, detail = work.result()
        else:
            stragglers.add(work)
            told, detail = "unknown", "no answer in time"
        outcomes.append(Outcome(t, mode, told, started, time.time(), detail))

    start = time.monotonic()
    tasks = []
    for i, t in enumerate(plan):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(t)))
    await asyncio.gather(*tasks)
    return outcomes, stragglers
