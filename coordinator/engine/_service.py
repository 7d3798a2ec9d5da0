"""The service core: every Coordinator operation in domain terms, transport-agnostic.

The gRPC servicer (and anything else, e.g. an HTTP front end later) converts requests to
these calls and maps ``domain.errors`` to status codes; no rule lives in the transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace

from ..domain import holds, operator
from ..domain.addresses import AllowList, valid_address
from ..domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    Unavailable,
)
from ..domain.holds import Hold
from ..domain.records import (
    BranchPlan,
    NotifyPlan,
    Protocol,
    Transition,
    TxRecord,
    TxState,
    new_record,
)
from ..domain.validation import (
    Limits,
    check_gid,
    check_reason,
    check_start,
    growth_bytes,
)
from ..log import Created, LostOwnership, Stored, TxLog
from ._driver import MACHINES, Driver
from ._operations import ServedOperations

log = logging.getLogger("txcoord.operators")
MAX_SCAN_PAGES = 20  # bounds the work one ListTransactions call may do
SCAN_BATCH = 64  # records per log read: bounds what one read may bring (records <= ~1.5 MiB)
MAX_PAGE_BYTES = 2 * 1024 * 1024  # a reply stays under gRPC's default 4 MiB receive limit
# A start whose creation has not landed in the log by then is answered UNAVAILABLE (the
# creation goes on): the client asks another coordinator, which finds it or creates it.
CREATE_ANSWER_S = 2.0
REMOTE_WAIT_S = 2.0  # a wait on a record driven elsewhere re-reads it at least this often


@dataclass(frozen=True, slots=True)
class StartRequest:
    gid: str
    protocol: Protocol
    plan: tuple[BranchPlan, ...]
    timeout_s: float
    concurrent: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    trace: tuple[tuple[str, str], ...] = ()  # the trace it joins (a bounded carrier)
    notify: NotifyPlan | None = None  # who hears of each settlement


@dataclass(frozen=True, slots=True)
class ListQuery:
    states: frozenset[TxState] = frozenset()
    protocol: Protocol | None = None
    labels: tuple[tuple[str, str], ...] = ()
    page_size: int = 50
    page_token: str = ""
    gid_prefix: str = ""
    participant: str = ""  # only transactions with a branch at this address


class CoordinatorCore:
    def __init__(
        self,
        txlog: TxLog,
        driver: Driver,
        limits: Limits | None = None,
        allow: AllowList | None = None,
        served: ServedOperations | None = None,
    ) -> None:
        """``served``: the participants' operation lists, to refuse a start naming an
        operation its participant does not serve (None: no such check)."""
        self._log = txlog
        self._driver = driver
        self._limits = limits or Limits()
        self._allow = allow or AllowList()
        self._served = served
        self.accepting = True

    async def start(self, req: StartRequest) -> tuple[Stored, bool]:
        """Create and drive a transaction; idempotent on gid (same plan: the existing one)."""
        if not self.accepting:
            raise Unavailable("coordinator is shutting down; retry on another instance")
        self._check_reachable()
        gid = req.gid or uuid.uuid4().hex
        check_start(req.gid, req.protocol, req.plan, req.timeout_s, req.concurrent,
                    dict(req.labels), self._limits, self._allow, req.notify)
        record = new_record(
            gid=gid, protocol=req.protocol, plan=req.plan, now=time.time(),
            timeout_s=req.timeout_s, concurrent=req.concurrent, labels=dict(req.labels),
            trace=req.trace, notify=req.notify,
        )
        self._check_fits(record)
        self._check_not_refused(req.plan)
        if self._served is not None:
            await self._served.check(req.plan, req.protocol, req.notify)
        if self._driver.active >= self._limits.max_active:
            return _same(await self._existing_or_refuse(record, bool(req.gid)), record), False
        created = await self._create(record)
        return _same(created.stored, record), created.created

    async def _create(self, record: TxRecord) -> Created:
        """The driver's start, answered within CREATE_ANSWER_S: a log that is slow or gone
        must not hold the caller to its deadline while another coordinator could answer.
        The creation goes on unanswered; if it lands, this coordinator drives it."""
        creation = asyncio.ensure_future(self._driver.start(record))
        done, _ = await asyncio.wait({creation}, timeout=CREATE_ANSWER_S)
        if done:
            return creation.result()
        creation.add_done_callback(_quietly)
        raise Unavailable(f"the transaction log did not take transaction {record.gid!r} within "
                          f"{CREATE_ANSWER_S:g} s; retry here or on another coordinator (the "
                          "start is idempotent on its gid)")

    def _check_not_refused(self, plan: tuple[BranchPlan, ...]) -> None:
        hold = holds.blocking_start([p.participant for p in plan], self._driver.holds.current())
        if hold is not None:
            raise Unavailable(f"participant {hold.address} is held by {hold.actor} "
                              f"({hold.reason[:200]}), and the hold refuses new starts; "
                              "retry once it is released (txc participant holds)")

    def _check_reachable(self) -> None:
        if not self._log.reachable():
            raise Unavailable("this coordinator cannot reach the transaction log (etcd) now; "
                              "retry on another coordinator")

    def _check_fits(self, record: TxRecord) -> None:
        """Refuse at the start what the log could not store later: the creation (state and
        payloads) and the state at its largest (results, errors, history) each fit one write.
        Encoding costs CPU on every start, so it is done only when a generous bound does not
        already show that the record fits."""
        growth = growth_bytes(len(record.plan), self._limits)
        if _rough_bytes(record) + growth <= self._log.max_request_bytes:
            return
        state, payloads = self._log.value_bytes(record)
        need = state + max(payloads, growth_bytes(len(record.plan), self._limits))
        if need > self._log.max_request_bytes:
            raise InvalidArgument("branches", f"this transaction could need {need} bytes in one log "
                                  f"write, over the log's limit of {self._log.max_request_bytes}: "
                                  "send smaller payloads, fewer branches or labels, shorter names "
                                  "or after lists")

    async def _existing_or_refuse(self, record: TxRecord, named: bool) -> Stored:

        """At capacity, a start of a transaction that exists still answers (starts are
        idempotent: a client retrying after a lost reply must learn what happened)."""
        existing = await self._log.get(record.gid) if named else None
        if existing is None:
            raise Overloaded(f"this coordinator drives {self._driver.active} transactions, its "
                             f"limit (max_active); nothing was started: retry later or elsewhere")
        return existing

    async def get(self, gid: str) -> Stored:
        check_gid(gid)
        stored = self._driver.local(gid) or await self._log.get(gid)
        if stored is None:
            raise NotFound(f"transaction {gid!r} not found")
        return stored

    async def replay(self, gid: str, actor: str, reason: str,
                     trace: tuple[tuple[str, str], ...] = ()) -> Stored:
        """Run a FAILED transaction's stuck steps again; ``trace``: the trace its next steps
        belong to (the operator's; the caller links it to the original one)."""
        def action(record: TxRecord, now: float) -> Transition:
            step = operator.replay(record, actor, reason, now)
            return replace(step, record=replace(step.record, trace=trace)) if trace else step

        return await self._operate(gid, reason, action)

    async def skip(self, gid: str, branch: str, actor: str, reason: str) -> Stored:
        check_gid(branch, "branch")
        return await self._operate(gid, reason,
                                   lambda r, now: operator.skip(r, branch, actor, reason, now))

    async def abort(self, gid: str, actor: str, reason: str) -> Stored:
        return await self._operate(gid, reason, lambda r, now: operator.abort(r, actor, reason, now))

    async def pause(self, gid: str, actor: str, reason: str) -> Stored:
        return await self._operate(gid, reason, lambda r, now: holds.pause(r, actor, reason, now))

    async def resume(self, gid: str, actor: str, reason: str) -> Stored:
        def action(record: TxRecord, now: float) -> Transition:
            resumed = holds.resume(record, actor, reason, now)
            return Transition(resumed, MACHINES[resumed.protocol].resume(resumed).calls)

        return await self._operate(gid, reason, action)

    # -- participant holds -------------------------------------------------------------
    async def hold(self, address: str, actor: str, reason: str, refuse_starts: bool) -> Hold:
        """Hold ``address`` cluster-wide; in force here at once, elsewhere within a poll."""
        holds.check_hold(address, reason, self._limits)
        self._check_reachable()
        await self._driver.holds.refresh()  # the count and an existing hold, as stored
        hold = holds.new_hold(address, actor, reason, time.time(), refuse_starts,
                              self._driver.holds.current())
        await self._log.put_hold(hold)
        await self._driver.holds.refresh()
        log.warning("participant %s held by %s: %s", address, hold.actor, reason,
                    extra={"participant": address, "actor": hold.actor})
        return hold

    async def release(self, address: str, actor: str, reason: str) -> Hold:
        """Release the hold on ``address``; NOT_FOUND when it is not held."""
        holds.check_hold(address, reason, self._limits)
        self._check_reachable()
        released = await self._log.delete_hold(address)
        if released is None:
            raise NotFound(f"participant {address} is not held")
        await self._driver.holds.refresh()
        log.warning("participant %s released by %s after %.1f s: %s", address, actor,
                    time.time() - released.since, reason,
                    extra={"participant": address, "actor": actor})
        return released

    async def list_holds(self) -> list[tuple[Hold, int]]:
        """The holds in force as the log has them, each with how many transactions wait on
        it at this coordinator."""
        await self._driver.holds.refresh()
        book = self._driver.holds
        return [(h, book.waiting(a)) for a, h in sorted(book.current().items())]

    async def _operate(self, gid: str, reason: str,
                       action: Callable[[TxRecord, float], Transition]) -> Stored:
        check_reason(reason, self._limits)
        stored = await self.get(gid)
        action(stored.record, time.time())  # refuse what the state forbids before taking over
        try:
            return await self._driver.operate(stored, action)
        except LostOwnership as exc:
            raise FailedPrecondition(f"transaction {gid!r} changed meanwhile; look again and "
                                     "retry") from exc

    async def wait_settled(self, gid: str, timeout_s: float) -> Stored:
        """The record once terminal or FAILED, or as it stands when ``timeout_s`` runs out.
        Raises Unavailable when this coordinator loses the log meanwhile: another one can
        answer (the caller asks it again)."""
        end = time.monotonic() + timeout_s
        stored = await self.get(gid)
        while not stored.record.state.settled:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            self._check_reachable()
            stored = await self._next_version(stored, min(remaining, REMOTE_WAIT_S))
        return stored

    async def _next_version(self, stored: Stored, within_s: float) -> Stored:
        """The record once it changes (or as it stands after ``within_s``): handed over by
        the driver when driven here, from an etcd watch when driven elsewhere."""
        gid = stored.record.gid
        if self._driver.owns(gid):
            # Short: the check for a lost log above must come round again soon.
            changed = await self._driver.wait_changed(gid, min(within_s, 0.5))
            return changed or await self.get(gid)
        try:
            async with asyncio.timeout(within_s), aclosing(self._log.watch(gid)) as versions:
                async for version in versions:
                    if version is None or version.revision > stored.revision:
                        return version or stored
                    if self._driver.owns(gid):  # taken over here meanwhile
                        break
        except TimeoutError:
            pass
        return await self.get(gid)

    async def watch(self, gid: str) -> AsyncIterator[Stored]:
        await self.get(gid)
        async for stored in self._log.watch(gid):
            if stored is None:
                return
            yield stored
            if stored.record.state.settled:
                return

    async def list(self, query: ListQuery) -> tuple[list[Stored], str]:
        if query.page_size > self._limits.max_page_size:
            raise InvalidArgument("page_size", f"at most {self._limits.max_page_size}")
        for field, value in (("gid_prefix", query.gid_prefix), ("page_token", query.page_token)):
            if value:
                check_gid(value, field)
        if query.participant and not valid_address(query.participant):
            raise InvalidArgument("participant", f"{query.participant[:80]!r} is not HOST:PORT")
        size = query.page_size or 50
        found: list[Stored] = []
        cursor = query.page_token
        room = MAX_PAGE_BYTES
        for _ in range(MAX_SCAN_PAGES):
            batch = min(size, SCAN_BATCH)
            page = await self._log.scan(start_after=cursor, limit=batch, prefix=query.gid_prefix)
            for stored in page:
                cursor = stored.record.gid
                if _matches(stored.record, query):
                    found.append(stored)
                    room -= listed_bytes(stored.record)
                    if len(found) == size or room <= 0:
                        return found, cursor
            if len(page) < batch:
                return found, ""
            await asyncio.sleep(0)
        return found, cursor


def listed_bytes(record: TxRecord) -> int:
    """About what a record weighs in a ListTransactions reply (payloads are not listed)."""
    branches = sum(len(s.result) + len(s.error) + len(p.name) + 32
                   for p, s in zip(record.plan, record.branches, strict=True))
    labels = sum(len(k) + len(v) + 8 for k, v in record.labels)
    history = sum(len(h.actor) + len(h.action) + len(h.reason) + 24 for h in record.history)
    return 256 + len(record.gid) + len(record.error) + branches + labels + history


def _rough_bytes(record: TxRecord) -> int:
    """More than a record's state and payloads weigh stored (text may be escaped to 6 bytes
    a character; the rest is bounded per branch and per label)."""
    text = sum(len(p.name) + len(p.participant) + len(p.action) + len(p.compensation)
               + sum(len(a) for a in p.after) for p in record.plan)
    labels = sum(len(k) + len(v) for k, v in record.labels)
    labels += sum(len(k) + len(v) for k, v in record.trace)
    return (6 * (text + labels + len(record.gid)) + sum(len(p.payload) for p in record.plan)
            + 512 * (len(record.plan) + len(record.labels)) + 2048)


def _quietly(creation: asyncio.Future[Created]) -> None:
    """Collect an unanswered creation's outcome (a failure is the driver's to log)."""
    if not creation.cancelled():
        creation.exception()


def _matches(record: TxRecord, query: ListQuery) -> bool:

    if query.states and record.state not in query.states:
        return False
    if query.protocol is not None and record.protocol is not query.protocol:
        return False
    if query.participant and all(p.participant != query.participant for p in record.plan):
        return False
    labels = dict(record.labels)
    return all(labels.get(k) == v for k, v in query.labels)


def _same(stored: Stored, asked: TxRecord) -> Stored:
    """The stored transaction, if it is the one asked for (same gid, same plan)."""
    if not stored.record.same_plan(asked):
        raise AlreadyExists(f"gid {asked.gid!r} already exists with a different plan")
    return stored
