"""The driver: feeds events to the state machines, persists first, then acts.

For each transaction it owns, the driver keeps a small runtime (the stored record, a lock
and the tasks of calls in flight). Every event is handled under the transaction's lock:
machine.apply -> log.write (compare-and-swap) -> launch the new calls. A write that finds
the transaction owned by someone else drops the runtime; nothing else is ever assumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from tenacity import RetryCallState

from ..domain import holds, notice, saga, two_phase
from ..domain._common import clip, erred, note
from ..domain.durability import as_creator_drives, must_persist
from ..domain.events import Answered, AttemptFailed, DeadlinePassed, Event, GaveUp, Misconfigured
from ..domain.holds import Hold
from ..domain.machine import Machine
from ..domain.records import BranchPlan, Call, Op, Protocol, Transition, TxRecord, TxState
from ..domain.validation import Limits
from ..log import Created, LogError, LostOwnership, RequestTooLarge, Stored, TxLog
from ..rpc._transactions import transaction
from ..telemetry._metrics import OFF, Metrics
from ..telemetry._tracing import OFF as TRACING_OFF
from ..telemetry._tracing import Tracing, as_current
from . import _spans as spans
from ._dispatch import Answer, Kind, Transport
from ._holds import HoldBook
from ._limiter import CallLimiter
from ._retry import retried

log = logging.getLogger("txcoord.engine")

MACHINES: dict[Protocol, Machine] = {Protocol.SAGA: saga, Protocol.TWO_PHASE: two_phase}


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How this coordinator drives transactions."""

    phase_budget_s: float = 3600.0
    """How long compensations and 2PC phase 2 are retried (when their policy sets no
    attempt cap) before the transaction is FAILED for an operator."""

    store_retry_initial_s: float = 0.05
    """First wait before a log write that failed (etcd unreachable) is tried again."""

    store_retry_max_s: float = 2.0
    """Longest wait between tries of a failed log write (the wait doubles up to it)."""

    max_calls_per_participant: int = 32
    """Calls in flight from this coordinator to one participant; more wait here, phase 2
    and compensations first."""

    failure_write_interval_s: float = 5.0
    """A failed attempt is written to the log at most this often per call (the record shows
    the attempt count and the last error; writing every retry would multiply the log's
    load exactly when a participant is down)."""

    hold_poll_s: float = 1.0
    """How often the participant holds are read from the log (a hold set through another
    coordinator is in force here within this)."""

    hold_resume_per_s: float = 50.0
    """Transactions resumed per second when a hold is released (not all at once)."""

    def __post_init__(self) -> None:
        for name in ("phase_budget_s", "store_retry_initial_s", "store_retry_max_s",
                     "hold_poll_s", "hold_resume_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, not {getattr(self, name)}")
        if self.store_retry_max_s < self.store_retry_initial_s:
            raise ValueError("store_retry_max_s: must be at least store_retry_initial_s")
        if self.max_calls_per_participant < 1:
            raise ValueError(f"max_calls_per_participant: must be at least 1, not "
                             f"{self.max_calls_per_participant}")
        if self.failure_write_interval_s < 0:
            raise ValueError("failure_write_interval_s: must not be negative")


@dataclass
class _Run:
    """``stored`` is what the log holds; ``record`` may be ahead of it by progress that
    recovery would only repeat (domain.durability), written with the next needed write."""

    stored: Stored
    epoch: int  # the log's lease epoch it is owned under: a later lease owns none of it
    record: TxRecord = field(init=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    calls: dict[Call, asyncio.Task[None]] = field(default_factory=dict)
    deadline_task: asyncio.Task[None] | None = None
    notice_task: asyncio.Task[None] | None = None  # delivering the settlement's notice
    failure_written: dict[Call, float] = field(default_factory=dict)  # monotonic time
    dropped: bool = False

    def __post_init__(self) -> None:
        self.record = self.stored.record

    def persisted(self, stored: Stored) -> None:
        self.stored, self.record = stored, stored.record

    @property
    def latest(self) -> Stored:
        """The record as this coordinator knows it, with the revision the log holds."""
        return Stored(self.record, self.stored.revision)


class Handover(Exception):
    """The driver is stopping: leave the step to the next owner."""


class Parked(Exception):
    """No call now: the participant is held (``address``) or the transaction is paused
    (``address`` empty). The call is made again when that ends."""

    def __init__(self, address: str = "") -> None:
        super().__init__(address)
        self.address = address


class Driver:
    def __init__(
        self,
        txlog: TxLog,
        transport: Transport,
        options: EngineOptions | None = None,
        clock: Callable[[], float] = time.time,
        limits: Limits | None = None,
        metrics: Metrics = OFF,
        tracing: Tracing = TRACING_OFF,
        holdbook: HoldBook | None = None,
    ) -> None:
        self._log = txlog
        self._metrics = metrics
        self._tracing = tracing
        self._transport = transport
        self._opts = options or EngineOptions()
        self.holds = holdbook or HoldBook(txlog, self._opts.hold_poll_s,
                                          self._opts.hold_resume_per_s, metrics)
        self.holds.on_release(self._resume_held)
        self._limits = limits or Limits()
        self._clock = clock
        self._runs: dict[str, _Run] = {}
        self._changed: dict[str, asyncio.Future[Stored]] = {}
        self._creating: set[str] = set()
        self._chores: set[asyncio.Task[None]] = set()  # background work, kept referenced
        self._stopping = False
        self._attempts_in_flight = 0
        self._limiter = CallLimiter(self._opts.max_calls_per_participant)

    @property
    def active(self) -> int:
        return len(self._runs)

    def owns(self, gid: str) -> bool:
        """Driven here, or being created here (the log may show it before create returns)."""
        return gid in self._runs or gid in self._creating

    def local(self, gid: str) -> Stored | None:
        run = self._runs.get(gid)
        return run.latest if run else None

    # -- entry points ------------------------------------------------------------------
    async def start(self, record: TxRecord) -> Created:
        """Persist a new transaction with its first intents, then drive it."""
        step = MACHINES[record.protocol].start(record, self._clock())
        epoch = self._log.lease_epoch
        self._creating.add(record.gid)
        try:
            with spans.write(self._tracing, step.record, "create"):
                created = await self._log.create(step.record)
        except LogError:
            # The create may have landed all the same (its reply was lost): look again
            # soon, and drive it if it is ours, rather than leave it to the rare scan.
            self._background(self._adopt_if_created(step.record, epoch))
            raise
        finally:
            self._creating.discard(record.gid)
        if created.created:
            run = _Run(created.stored, epoch)
            run.record = as_creator_drives(run.record)
            self._track(run)
            self._metrics.tx_started(record.protocol)
            self._log_transition(run.record, None)
            self._after_write(run, step.calls)
        return created

    async def _adopt_if_created(self, record: TxRecord, epoch: int) -> None:
        for pause in (0.5, 2.0, 5.0):
            await asyncio.sleep(pause)
            try:
                stored = await self._log.get(record.gid)
            except LogError:
                continue
            if stored is None or self.owns(record.gid):
                continue
            # This coordinator's create (another's has its own created_at): owned here,
            # under the lease of ``epoch`` if that lease still holds.
            ours = stored.record.created_at == record.created_at and stored.record.same_plan(record)
            if ours and self._log.lease_epoch == epoch and not self._stopping:
                log.warning("gid=%s: its create's reply was lost; driving it", record.gid,
                            extra={"gid": record.gid})
                self.adopt(stored, epoch)
            return

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def adopt(self, stored: Stored, epoch: int) -> None:
        """Drive a transaction loaded from the log (claimed orphan) under the lease of
        ``epoch`` (the one current when it was claimed)."""
        held = self._runs.get(stored.record.gid)
        if held is not None and held.epoch != epoch:
            self._drop(held)  # driven under a lease that ended; claimed again now
            held = None
        if held is not None or stored.record.finished:
            return  # FAILED ones wait, unowned, for an operator (once their notice is out)
        run = _Run(stored, epoch)
        self._track(run)
        log.info("adopted gid=%s state=%s", stored.record.gid, stored.record.state.name,
                 extra={"gid": stored.record.gid})
        spans.taken_over(self._tracing, stored.record, self._clock())
        for address in stored.record.waiting_on:  # resumed here when (or if) it is released
            self.holds.wait(address, stored.record.gid)
        self._after_write(run, MACHINES[stored.record.protocol].resume(stored.record).calls)

    async def operate(self, stored: Stored, action: Callable[[TxRecord, float], Transition]) -> Stored:
        """Apply an operator action. This coordinator takes the transaction over first if it
        does not drive it (FAILED ones are unowned); the CAS makes that safe against the
        previous owner, whose next write then fails."""
        run = self._runs.get(stored.record.gid)
        if run is None:
            epoch = self._log.lease_epoch
            run = _Run(await self._log.claim(stored), epoch)
            self._track(run)
        async with run.lock:
            if run.dropped:
                raise LostOwnership(stored.record.gid)
            now = self._clock()
            step = action(run.record, now)
            step = Transition(notice.arm(run.record, step.record, now), step.calls)
            try:
                run.persisted(await self._persist(run, step.record))
            except LostOwnership:
                self._drop(run)
                raise
            for call in step.calls:  # fresh budgets: restart calls waiting in backoff
                task = run.calls.pop(call, None)
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
            self._disarm_deadline(run)  # a resume moved it; _after_write arms the new one
            self._log_transition(run.record, None)
            self._after_write(run, step.calls)
            return run.latest

    async def wait_changed(self, gid: str, within_s: float) -> Stored | None:
        """The record as this process next writes it, or None after ``within_s`` seconds."""
        waiter = self._changed.get(gid)
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
            self._changed[gid] = waiter
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), within_s)
        except TimeoutError:
            return None
        finally:
            if waiter.done() and self._changed.get(gid) is waiter:
                del self._changed[gid]

    async def stop(self, grace_s: float) -> None:
        """Stop starting calls, let attempts in flight finish (bounded), drop the rest."""
        self._stopping = True
        end = time.monotonic() + grace_s
        while self._attempts_in_flight and time.monotonic() < end:  # noqa: ASYNC110 - shutdown only
            await asyncio.sleep(0.02)
        for run in list(self._runs.values()):
            self._drop(run)
        for chore in list(self._chores):
            chore.cancel()

    # -- event handling ----------------------------------------------------------------
    async def _handle(self, run: _Run, event: Event) -> None:
        async with run.lock:
            if run.dropped:
                return
            now = self._clock()
            step = MACHINES[run.record.protocol].apply(run.record, event, now)
            if step.record is run.record:
                return
            # A settlement arms its notice in the same write (write-ahead: any owner delivers it).
            step = Transition(notice.arm(run.record, step.record, now), step.calls)
            # A failed attempt is written (at most every failure_write_interval_s) so that
            # operators see it; other progress only when recovery needs it.
            if isinstance(event, AttemptFailed) or must_persist(run.stored.record, step.record):
                if not await self._write_now(run, step.record):
                    return
            else:
                run.record = step.record
            self._log_transition(run.record, event)
            self._after_write(run, step.calls)

    async def _persist(self, run: _Run, new: TxRecord) -> Stored:
        """Write until it lands or ownership is lost: etcd being away is not a reason to
        give up a decision, and the CAS makes every retry safe."""
        backoff = self._opts.store_retry_initial_s
        with spans.write(self._tracing, new) as span:
            while True:
                try:
                    return await self._log.write(run.stored, new)
                except RequestTooLarge:
                    raise  # the same write would be refused again
                except LogError as exc:
                    if self._stopping:
                        raise LostOwnership(new.gid) from exc
                    log.warning("log write failed gid=%s: %s; retrying", new.gid, exc,
                                extra={"gid": new.gid})
                    span.event("retry", {"error": str(exc)[:200], "backoff_s": backoff})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._opts.store_retry_max_s)

    async def _fail_oversized(self, run: _Run, exc: RequestTooLarge) -> None:
        """The store will never take this record: park the transaction, FAILED and without
        its branch results (which are what grows), for an operator; never retry for ever."""
        reason = (f"the transaction's record outgrew what the log accepts in one write ({exc}); "
                  "branch results were dropped to record this")
        log.error("gid=%s: %s", run.record.gid, reason, extra={"gid": run.record.gid})
        slim = tuple(replace(s, result=b"") for s in run.stored.record.branches)
        now = self._clock()
        failed = note(replace(erred(run.stored.record, reason), branches=slim, state=TxState.FAILED,
                              updated_at=now), "failed", reason, now)
        failed = notice.arm(run.stored.record, failed, now)
        try:
            run.persisted(await self._persist(run, failed))
        except (LostOwnership, RequestTooLarge):
            log.error("gid=%s: could not record the failure either; left to the next owner",
                      run.record.gid, extra={"gid": run.record.gid})
            self._drop(run)
            return
        self._after_write(run, ())

    def _after_write(self, run: _Run, calls: tuple[Call, ...]) -> None:
        record = run.record
        machine = MACHINES[record.protocol]
        self._notify(run.stored)
        current = asyncio.current_task()
        for call, task in list(run.calls.items()):
            if task is not current and not machine.wanted(record, call):
                task.cancel()
                del run.calls[call]
        if record.state.settled:
            if notice.pending(record):
                self._cancel_calls(run)  # nothing more to do but tell the notify target
                self._start_notice(run)
            else:
                self._finish(run)
            return
        self._stop_notice(run)  # resumed by an operator: its notice was superseded
        for call in calls:
            if call not in run.calls:
                run.calls[call] = asyncio.create_task(self._perform(run, call))
        self._arm_deadline(run, machine.deadline(record))

    def _disarm_deadline(self, run: _Run) -> None:
        if run.deadline_task is not None and run.deadline_task is not asyncio.current_task():
            run.deadline_task.cancel()
        run.deadline_task = None

    def _arm_deadline(self, run: _Run, at: float | None) -> None:
        if run.deadline_task is not None or at is None:
            return
        delay = max(0.0, at - self._clock())

        async def fire() -> None:
            await asyncio.sleep(delay)
            run.deadline_task = None
            await self._handle(run, DeadlinePassed())

        run.deadline_task = asyncio.create_task(fire())

    def _track(self, run: _Run) -> None:
        self._runs[run.record.gid] = run
        self._metrics.tx_driven(run.record.protocol, +1)

    def _untrack(self, run: _Run) -> bool:
        """Forget ``run``; False if it was forgotten already (finish and drop may both come)."""
        if self._runs.get(run.record.gid) is not run:
            return False
        del self._runs[run.record.gid]
        self._metrics.tx_driven(run.record.protocol, -1)
        return True

    def _finish(self, run: _Run) -> None:
        record = run.record
        if self._untrack(run):
            now = self._clock()
            # Settled when its state last changed: a notice delivered since is not its duration.
            settled_at = record.updated_at if record.notify is not None else now
            self._metrics.tx_finished(record.protocol, record.state, settled_at - record.created_at)
            spans.settled(self._tracing, record, now)
        self._cancel_all(run)

    def _drop(self, run: _Run) -> None:
        run.dropped = True
        self._untrack(run)
        self._cancel_all(run)
        self._notify(run.stored)

    def _cancel_all(self, run: _Run) -> None:
        self._cancel_calls(run)
        self._stop_notice(run)

    def _stop_notice(self, run: _Run) -> None:
        task, run.notice_task = run.notice_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _cancel_calls(self, run: _Run) -> None:
        """Branch calls and the deadline timer (not the notice)."""
        current = asyncio.current_task()
        tasks = list(run.calls.values())
        if run.deadline_task is not None:
            tasks.append(run.deadline_task)
            run.deadline_task = None
        run.calls.clear()
        for task in tasks:
            if task is not current:
                task.cancel()

    def _notify(self, stored: Stored) -> None:
        waiter = self._changed.pop(stored.record.gid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(stored)

    # -- participant calls ---------------------------------------------------------------
    async def _perform(self, run: _Run, call: Call) -> None:
        # The transaction's trace is current for the call and its consequences, whichever
        # task started it (a takeover, an operator's action): log lines carry its trace id.
        with as_current(dict(run.record.trace) if self._tracing.enabled else {}):
            try:
                event = await self._call_with_retries(run, call)
            except Parked as parked:
                if run.calls.get(call) is asyncio.current_task():
                    del run.calls[call]  # before waiting: a resume must be able to send it again
                if parked.address:
                    await self._wait_on_hold(run, parked.address)
                return
            except Handover:
                return
            finally:
                if run.calls.get(call) is asyncio.current_task():
                    del run.calls[call]
            await self._handle(run, event)

    async def _call_with_retries(self, run: _Run, call: Call) -> Event:
        record = run.record
        plan = record.plan[record.index(call.branch)]
        machine = MACHINES[record.protocol]
        attempt = record.status(call.branch).attempts
        action_result = record.status(call.branch).result if call.op == Op.COMPENSATE else b""

        async def one_attempt() -> Answer:
            nonlocal attempt
            attempt += 1
            try:
                return await self._attempt(run, record, plan, call.op, attempt,
                                           action_result, parkable=True)
            except Parked:
                attempt -= 1  # no call went out: the next one is still this attempt
                raise

        async def note_failure(state: RetryCallState) -> None:
            assert state.outcome is not None
            answer: Answer = state.outcome.result()
            now = time.monotonic()
            last = run.failure_written.get(call)
            if last is not None and now - last < self._opts.failure_write_interval_s:
                return
            run.failure_written[call] = now
            await self._handle(run, AttemptFailed(call.branch, call.op, attempt,
                                                  clip(answer.message)))

        deadline = machine.retry_deadline(record, call.op, self._opts.phase_budget_s)
        answer = await retried(await one_attempt(), one_attempt, plan.retry_for(call.op),
                               deadline, self._clock,
                               note_failure)
        return self._event(run.record, call, self._bounded(run.record, plan, call, answer), attempt)

    async def _attempt(self, run: _Run, record: TxRecord, plan: BranchPlan, op: str, attempt: int,
                       action_result: bytes = b"", parkable: bool = False,
                       kind: str = "") -> Answer:
        """One call of ``op`` on ``plan``, made only while ``run`` is owned under the lease it
        was taken with (else Handover). ``kind``: its name in the metrics (default ``op``).
        ``parkable``: a branch call, which waits (Parked) while its transaction is paused or
        its participant held instead of going out."""
        if self._stopping or run.dropped:
            raise Handover
        await self._wait_for_lease()
        if self._log.lease_epoch != run.epoch:
            # Owned under a lease that ended (a pause, a partition): another
            # coordinator may drive it now. Fenced: no call, no write from here.
            log.warning("lease lost: leaving gid=%s to its next owner", run.record.gid,
                        extra={"gid": run.record.gid})
            self._drop(run)
            raise Handover
        async with self._limiter.slot(plan.participant, op):
            if parkable:  # checked here, right before the call: the slot may have been waited for
                if run.record.paused is not None:
                    raise Parked()
                if self.holds.held(plan.participant) is not None:
                    raise Parked(plan.participant)
            self._attempts_in_flight += 1
            started = time.perf_counter()
            try:
                with spans.call(self._tracing, record, plan, op, attempt) as span:
                    answer = await self._transport.call(record.gid, plan, op, attempt,
                                                        span.carrier(), action_result)
                    spans.answered(span, answer)
            finally:
                self._attempts_in_flight -= 1
            self._metrics.branch_call(kind or op, answer.kind.value, time.perf_counter() - started)
            return answer

    # -- the settlement's notice ---------------------------------------------------------
    def _start_notice(self, run: _Run) -> None:
        if run.notice_task is None or run.notice_task.done():
            run.notice_task = asyncio.create_task(self._deliver_notice(run))
            self._metrics.notice("sent")

    async def _deliver_notice(self, run: _Run) -> None:
        """Call the notify target until it acknowledges, refuses or the budget is spent,
        then write how it ended (which releases the finished transaction)."""
        generation = run.record.notice.generation
        with as_current(dict(run.record.trace) if self._tracing.enabled else {}):
            try:
                answer, attempts = await self._notice_answer(run)
            except Handover:
                return
            if answer.kind is Kind.OK:
                await self._end_notice(run, "acknowledged", lambda r, now: notice.acknowledged(
                    r, generation, attempts, now))
                return
            why = _notice_failure(run.record, answer, attempts)
            await self._end_notice(run, "given_up", lambda r, now: notice.gave_up(
                r, generation, attempts, why, now))

    async def _notice_answer(self, run: _Run) -> tuple[Answer, int]:
        record = run.record
        assert record.notify is not None
        # The settled transaction as it stands: what the receiver is told, on every attempt.
        plan = notice.call_plan(record, transaction(record).SerializeToString())
        attempt = 0

        async def one_attempt() -> Answer:
            nonlocal attempt
            attempt += 1
            return await self._attempt(run, record, plan, Op.EXECUTE, attempt, kind="notify")

        async def unwritten(state: RetryCallState) -> None:
            """Failed attempts of a notice are not written: its end records the count."""

        answer = await retried(await one_attempt(), one_attempt, record.notify.retry,
                               notice.deadline(record), self._clock, unwritten)
        return answer, attempt

    async def _end_notice(self, run: _Run, event: str,
                          change: Callable[[TxRecord, float], TxRecord]) -> None:
        async with run.lock:
            new = change(run.record, self._clock())
            if run.dropped or new is run.record:
                return  # superseded or taken over meanwhile: nothing of ours to write
            try:
                run.persisted(await self._persist(run, new))
            except LostOwnership:
                self._drop(run)
                return
            self._metrics.notice(event)
            log.info("notice gid=%s %s after %d attempt(s)", new.gid, event.replace("_", " "),
                     new.notice.attempts, extra={"gid": new.gid})
            self._after_write(run, ())

    def _bounded(self, record: TxRecord, plan: BranchPlan, call: Call, answer: Answer) -> Answer:
        """A result too large for the record is the participant's mistake, not a result."""
        size = len(answer.result)
        others = sum(len(s.result) for p, s in zip(record.plan, record.branches, strict=True)
                     if p.name != call.branch)
        limit = min(self._limits.max_result_bytes, self._limits.max_total_result_bytes - others)
        if size <= limit:
            return answer
        return Answer(Kind.MISCONFIGURED, may_have_run=True, message=(
            f"participant {plan.participant} answered {call.op} with a result of {size} bytes; "
            f"this transaction has room for {max(limit, 0)} (max_result_bytes, "
            "max_total_result_bytes)"))

    @staticmethod
    def _event(record: TxRecord, call: Call, answer: Answer, attempt: int) -> Event:
        message = clip(answer.message)
        if answer.kind is Kind.UNKNOWN:
            return GaveUp(call.branch, call.op, message, attempts=attempt)
        if answer.kind is Kind.MISCONFIGURED:
            log.error("misconfigured participant gid=%s branch=%s op=%s: %s", record.gid,
                      call.branch, call.op, message,
                      extra={"gid": record.gid, "branch": call.branch, "op": call.op,
                             "attempt": attempt, "outcome": "misconfigured"})
            return Misconfigured(call.branch, call.op, message, answer.may_have_run,
                                 attempts=attempt)
        return Answered(call.branch, call.op, answer.kind is Kind.OK, answer.result, message,
                        attempts=attempt, null_compensation=answer.null_compensation)

    # -- holds -----------------------------------------------------------------------------
    async def _wait_on_hold(self, run: _Run, address: str) -> None:
        """Record that ``run`` waits on the hold of ``address`` (its clock stops), once."""
        async with run.lock:
            if run.dropped:
                return
            # Registered first: a release from now on finds it (or, released already,
            # it is queued for resumption at once).
            self.holds.wait(address, run.record.gid)
            new = holds.wait_on(run.record, address, self._clock())
            if new is not run.record and await self._write_now(run, new):
                self._notify(run.stored)

    async def _resume_held(self, address: str, gid: str, hold: Hold | None) -> None:
        """The hold on ``address`` is gone: run ``gid`` on if it is driven here (another
        owner resumes it when it takes it over)."""
        run = self._runs.get(gid)
        if run is None:
            return
        async with run.lock:
            if run.dropped:
                return
            if self.holds.held(address) is not None:  # held again meanwhile: wait on
                self.holds.wait(address, gid)
                return
            new = holds.released(run.record, address, hold, self._clock())
            if new is not run.record and not await self._write_now(run, new):
                return
            self._disarm_deadline(run)
            self._after_write(run, MACHINES[run.record.protocol].resume(run.record).calls)

    async def _write_now(self, run: _Run, new: TxRecord) -> bool:
        """Persist ``new`` (under the run's lock); False when this coordinator no longer
        drives it after all (another owns it, or it was parked FAILED for its size)."""
        try:
            run.persisted(await self._persist(run, new))
        except LostOwnership:
            log.warning("lost ownership gid=%s; another coordinator drives it",
                        run.record.gid, extra={"gid": run.record.gid})
            self._drop(run)
            return False
        except RequestTooLarge as exc:
            await self._fail_oversized(run, exc)
            return False
        return True

    async def _wait_for_lease(self) -> None:
        """Hold attempts while this coordinator cannot prove it still owns anything."""
        while not self._log.lease_alive():
            if self._stopping:
                raise Handover
            await asyncio.sleep(0.1)

    # -- logs ----------------------------------------------------------------------------
    def _log_transition(self, record: TxRecord, event: Event | None) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        if event is None:
            log.info("transition gid=%s state=%s event=start", record.gid, record.state.name,
                     extra={"gid": record.gid})
        elif isinstance(event, DeadlinePassed):
            log.info("transition gid=%s state=%s event=deadline", record.gid, record.state.name,
                     extra={"gid": record.gid})
        else:
            outcome = _outcome_name(event)
            attempt = event.attempt if isinstance(event, AttemptFailed) else \
                record.status(event.branch).attempts
            log.info("transition gid=%s state=%s branch=%s op=%s attempt=%d outcome=%s",
                     record.gid, record.state.name, event.branch, event.op, attempt, outcome,
                     extra={"gid": record.gid, "branch": event.branch, "op": event.op,
                            "attempt": attempt, "outcome": outcome})


def _notice_failure(record: TxRecord, answer: Answer, attempts: int) -> str:
    """Why a notice was given up, for the history (the receiver's message, clipped later)."""
    target = record.notify
    assert target is not None
    if answer.kind is Kind.FAILED:
        return f"{target.operation} at {target.participant} refused it: {answer.message}"
    if answer.kind is Kind.MISCONFIGURED:
        return answer.message
    return (f"no acknowledgement from {target.participant} within the notice's budget of "
            f"{target.budget_s:g} s ({attempts} attempts): {answer.message}")


def _outcome_name(event: Answered | AttemptFailed | GaveUp | Misconfigured) -> str:
    if isinstance(event, Answered):
        return "ok" if event.ok else "failed"
    if isinstance(event, Misconfigured):
        return "misconfigured"
    return "retry" if isinstance(event, AttemptFailed) else "gave_up"


