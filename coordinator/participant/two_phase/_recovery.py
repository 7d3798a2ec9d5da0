"""In-doubt recovery: finish this service's prepared branches by asking the coordinator.

A branch stays prepared (holding its row locks) until phase 2 reaches it. If this process
died after voting yes, or the coordinator's Commit/Abort cannot get through, the
coordinator's retries may be late or never arrive (a FAILED transaction waits for an
operator). So at start-up and every ``recovery_interval_s`` seconds the host lists its
prepared XIDs, asks ``GetTransaction(gid)`` for each, and applies the decision:
commit decided -> commit; abort decided or NOT_FOUND -> abort (presumed abort: with no
commit decision logged, the answer is abort); still PREPARING -> left for the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from coordinator._proto.txc.v1 import coordinator_pb2 as cpb
from coordinator.client._coordinator import CoordinatorClient
from coordinator.participant._db.errors import describe
from coordinator.participant._metrics import OFF, ParticipantMetrics
from coordinator.participant.two_phase._branches import InDoubtBranch, TwoPhase
from coordinator.participant.two_phase._sessions import Decision
from coordinator.participant.two_phase._table import XaState
from coordinator.rpc._tls import TlsFiles

log = logging.getLogger("coordinator.participant.recovery")


@dataclass(frozen=True)
class Verdict:
    decision: Decision | None  # None: not decided yet (or cannot be told): ask again later
    reason: str


class DecisionSource(Protocol):
    async def decide(self, gid: str) -> Verdict: ...
    async def close(self) -> None: ...


_COMMIT_STATES = {cpb.TX_STATE_COMMITTING, cpb.TX_STATE_COMMITTED}
_ABORT_STATES = {cpb.TX_STATE_ABORTING, cpb.TX_STATE_ABORTED}


def verdict_of(tx: cpb.Transaction) -> Verdict:
    """The 2PC decision a Transaction shows (see the DESIGN notes' TxState)."""
    state = cpb.TxState.Name(tx.state)
    if tx.protocol != cpb.PROTOCOL_TWO_PHASE:
        return Verdict(None, f"gid is a {cpb.Protocol.Name(tx.protocol)} transaction, not 2PC")
    if tx.state in _COMMIT_STATES:
        return Verdict(Decision.COMMIT, state)
    if tx.state in _ABORT_STATES:
        return Verdict(Decision.ABORT, state)
    if tx.state == cpb.TX_STATE_FAILED:
        # Stuck in phase 2: the decision is the last "decide" entry of its history.
        decided = [h.reason for h in tx.history if h.action == "decide"]
        if decided and decided[-1].startswith("commit"):
            return Verdict(Decision.COMMIT, f"{state}, decided commit")
        if decided and decided[-1].startswith("abort"):
            return Verdict(Decision.ABORT, f"{state}, decided abort")
    return Verdict(None, state)


class CoordinatorDecisions:
    """Asks a txcoord coordinator (GetTransaction) for each gid's decision."""

    def __init__(self, address: str, timeout_s: float = 5.0, tls_ca: bytes | None = None,
                 tls_identity: TlsFiles | None = None) -> None:
        self._client = CoordinatorClient(address, timeout_s=timeout_s, tls_ca=tls_ca,
                                         tls_identity=tls_identity)

    async def decide(self, gid: str) -> Verdict:
        try:
            tx = await self._client.get(gid)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return Verdict(Decision.ABORT, "NOT_FOUND: presumed abort")
            raise
        return verdict_of(tx)

    async def close(self) -> None:
        await self._client.close()


@dataclass(frozen=True)
class RecoveryReport:
    """One round: what was in doubt at its start and what became of it."""

    in_doubt: tuple[InDoubtBranch, ...] = ()
    committed: tuple[InDoubtBranch, ...] = ()
    aborted: tuple[InDoubtBranch, ...] = ()
    left: tuple[InDoubtBranch, ...] = field(default=())  # undecided, busy or unreachable

    @property
    def oldest_age_s(self) -> float:
        return max((b.age_s for b in self.in_doubt), default=0.0)


class InDoubtResolver:
    """Finishes one database's in-doubt branches (:class:`TwoPhase`): each round lists the
    prepared branches, asks the coordinator for their decisions and applies them."""

    def __init__(self, two_phase: TwoPhase, decisions: DecisionSource | None,
                 interval_s: float, round_timeout_s: float = 60.0, *,
                 metrics: ParticipantMetrics = OFF) -> None:
        self._two_phase = two_phase
        self._decisions = decisions
        self._metrics = metrics
        self._interval_s = interval_s
        # A round stuck on a connection the network lost would stop recovery for good
        # (no driver timeout covers a statement whose packets vanish): give up, go again.
        self._round_timeout_s = round_timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop: a first round now, then one every ``interval_s`` seconds."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="txc-participant-2pc-recovery")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._decisions is not None:
            await self._decisions.close()

    async def _loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._round_timeout_s):
                    await self.run_once()
            except TimeoutError:
                log.warning("2PC recovery round took over %.0fs; starting again", self._round_timeout_s)
            except Exception as exc:  # the database may be down: try again next round
                log.warning("2PC recovery round failed: %s", describe(exc))
            await asyncio.sleep(self._interval_s)

    async def run_once(self) -> RecoveryReport:
        report = await self._round()
        self._metrics.recovery_round(  # the in-doubt gauges: what the round left
            len(report.committed), len(report.aborted), len(report.left),
            max((b.age_s for b in report.left), default=0.0))
        return report

    async def _round(self) -> RecoveryReport:
        branches = await self._two_phase.in_doubt()
        report = RecoveryReport(in_doubt=tuple(branches))
        if not branches:
            return report
        oldest = branches[0]
        log.info("2PC in-doubt branches: %d, oldest %.1fs (gid=%s branch=%s)",
                 len(branches), report.oldest_age_s, oldest.gid, oldest.branch,
                 extra={"gid": oldest.gid, "branch": oldest.branch})
        if self._decisions is None:
            log.info("2PC recovery: no coordinator address configured; waiting for phase 2")
            return RecoveryReport(in_doubt=report.in_doubt, left=report.in_doubt)
        done: dict[XaState | None, list[InDoubtBranch]] = {}
        for gid, group in _by_gid(branches).items():
            verdict = await self._ask(gid)
            for branch in group:
                outcome = await self._apply(branch, verdict)
                done.setdefault(outcome, []).append(branch)
        return RecoveryReport(report.in_doubt, tuple(done.get(XaState.COMMITTED, ())),
                              tuple(done.get(XaState.ABORTED, ())), tuple(done.get(None, ())))

    async def _ask(self, gid: str) -> Verdict | None:
        assert self._decisions is not None
        try:
            verdict = await self._decisions.decide(gid)
        except Exception as exc:
            log.warning("2PC recovery: cannot ask the coordinator about gid=%s (%s); next round",
                        gid, describe(exc) if not isinstance(exc, grpc.aio.AioRpcError) else exc.code(),
                        extra={"gid": gid})
            return None
        if verdict.decision is None:
            log.info("2PC recovery: gid=%s undecided (%s); next round", gid, verdict.reason,
                     extra={"gid": gid})
        return verdict

    async def _apply(self, branch: InDoubtBranch, verdict: Verdict | None) -> XaState | None:
        if verdict is None or verdict.decision is None:
            return None
        outcome = await self._two_phase.resolve(branch, verdict.decision)
        if outcome is None:
            log.info("2PC recovery: gid=%s branch=%s busy (a call holds it); next round",
                     branch.gid, branch.branch, extra={"gid": branch.gid, "branch": branch.branch})
            return None
        expected = XaState.COMMITTED if verdict.decision is Decision.COMMIT else XaState.ABORTED
        level = logging.INFO if outcome is expected else logging.WARNING
        log.log(level, "2PC recovery: gid=%s branch=%s %s after %.1fs in doubt (coordinator: %s)",
                branch.gid, branch.branch, outcome.value, branch.age_s, verdict.reason,
                extra={"gid": branch.gid, "branch": branch.branch, "outcome": outcome.value})
        return outcome


def _by_gid(branches: Iterable[InDoubtBranch]) -> dict[str, list[InDoubtBranch]]:
    groups: dict[str, list[InDoubtBranch]] = {}
    for branch in branches:
        groups.setdefault(branch.gid, []).append(branch)
    return groups
