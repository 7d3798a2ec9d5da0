"""The outbox relay: claim pending rows, deliver them, mark them sent.

Claiming is a short transaction: ``SELECT .. FOR UPDATE SKIP LOCKED`` picks due rows
no other relay is claiming right now, and an UPDATE stamps them with this pass's token
and pushes ``available_at`` one lease ahead, which hides them from every other relay
until the lease runs out. Delivery happens outside any transaction; the token guards
the final UPDATE (sent / retry later / failed). A relay that dies mid-delivery leaves
its rows to be claimed again once the lease expires: delivery is at-least-once, and the
receivers (StartSaga is idempotent on gid) make the effect exactly-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_not_exception_type,
    stop_after_attempt,
)

from coordinator.participant._db.backoff import backoff
from coordinator.participant._db.dsn import check_connection
from coordinator.participant._db.errors import PermanentDeliveryError, describe, is_transient
from coordinator.participant._db.sql import age, db_now, db_shifted, is_mysql
from coordinator.participant._db.tables import outbox
from coordinator.participant._metrics import OFF, ParticipantMetrics
from coordinator.participant.outbox._messages import (
    OutboxMessage,
    Status,
    decode_trace,
    has_trace_column,
)
from coordinator.telemetry._tracing import as_current

log = logging.getLogger("coordinator.participant.relay")

Sender = Callable[[OutboxMessage], Awaitable[None]]
"""Delivers one message. Raise :class:`PermanentDeliveryError` when it can never be
delivered (the row becomes ``failed``); any other exception means "try again later"."""

_ERROR_CHARS = 512


@dataclass(frozen=True)
class RelayOptions:
    """Tuning of a relay; the defaults suit a service sending a few hundred messages/s."""

    batch_size: int = 32
    """Rows claimed per pass."""

    poll_interval_s: float = 0.5
    """Wait between passes that found less than a full batch (``Relay.wake`` cuts it short)."""

    lease_s: float = 60.0
    """How long a claimed row stays hidden from other relays. A delivery pass is cut off at
    half the lease, so a slow relay releases rows before anyone else may take them."""

    send_timeout_s: float = 10.0
    """Deadline of one send attempt; must be under half of :attr:`lease_s`."""

    send_attempts: int = 3
    """Send tries within one claim, with jittered exponential waits between them."""

    initial_backoff_s: float = 0.2
    """First wait, both between send tries and before a failed message is claimed again."""

    max_backoff_s: float = 300.0
    """Cap of the wait between claims of a failing message."""

    metrics: ParticipantMetrics = OFF
    """Where the relay reports deliveries, its backlog and its lag; off by default. See
    :class:`PrometheusParticipantMetrics`."""

    backlog_interval_s: float = 15.0
    """With metrics on, how often :meth:`Relay.run` counts the backlog for them (a query
    over the pending rows; Prometheus scrapes every 15 s by default)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.send_attempts < 1:
            raise ValueError("batch_size and send_attempts must be at least 1")
        if not 0 < self.send_timeout_s < self.lease_s / 2:
            raise ValueError("send_timeout_s must be positive and under half of lease_s")
        if self.backlog_interval_s <= 0:
            raise ValueError("backlog_interval_s must be positive")


@dataclass(frozen=True)
class RelayStats:
    """One pass: messages claimed, and what became of them."""

    claimed: int = 0
    sent: int = 0
    retry_later: int = 0
    failed: int = 0


@dataclass(frozen=True)
class OutboxBacklog:
    """Undelivered (pending) messages of a relay's kinds, by the database's clock."""

    messages: int
    oldest_age_s: float  # since the oldest was written (0: none)


class _Verdict(Enum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


class Relay:
    """Delivers outbox rows of the kinds it has senders for; run several at once freely."""

    def __init__(
        self,
        engine: AsyncEngine,
        senders: Mapping[str, Sender],
        options: RelayOptions | None = None,
    ) -> None:
        if not senders:
            raise ValueError("a relay needs at least one sender")
        self._engine = engine
        self._senders = dict(senders)
        self._options = options or RelayOptions()
        self._metrics = self._options.metrics
        self._wake = asyncio.Event()
        self._backlog_due = 0.0  # time.monotonic() of the next backlog count

    def wake(self) -> None:
        """Look for new rows now instead of at the end of the poll interval."""
        self._wake.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver until ``stop`` is set (or the task is cancelled).

        Raises :class:`DsnError` at once when the database cannot be reached at start;
        later outages are logged and waited out.
        """
        stop = stop or asyncio.Event()
        await check_connection(self._engine)
        idle = self._options.poll_interval_s
        while not stop.is_set():
            try:
                stats = await self.run_once()
                idle = self._options.poll_interval_s
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("outbox relay: database unavailable (%s)", describe(exc))
                stats, idle = RelayStats(), min(idle * 2, 30.0)
            await self._count_backlog()
            if stats.claimed < self._options.batch_size:
                await _wait_any(stop, self._wake, idle)
                self._wake.clear()

    async def run_once(self) -> RelayStats:
        """One pass: claim a batch, deliver it, record the results."""
        token = str(uuid.uuid4())
        messages = await self._claim(token)
        if not messages:
            return RelayStats()
        verdicts = await asyncio.gather(*(self._deliver(token, m) for m in messages))
        stats = RelayStats(
            claimed=len(messages),
            sent=verdicts.count(_Verdict.SENT),
            retry_later=verdicts.count(_Verdict.RETRY),
            failed=verdicts.count(_Verdict.FAILED),
        )
        self._metrics.relay_pass(stats.sent, stats.retry_later, stats.failed)
        return stats

    async def backlog(self) -> OutboxBacklog:
        """Count the pending messages of this relay's kinds, delayed ones included, and
        the age of the oldest (one query over the pending rows)."""
        async with self._engine.connect() as conn:
            pending = select(func.count(), func.min(outbox.c.created_at), db_now(conn)).where(
                outbox.c.status == Status.PENDING.value, outbox.c.kind.in_(sorted(self._senders)))
            count, oldest, now = (await conn.execute(pending)).one()
        return OutboxBacklog(int(count), age(now, oldest) if oldest is not None else 0.0)

    async def _count_backlog(self) -> None:
        """Refresh the backlog gauges when metrics are on and the interval has passed:
        the count is a query that only they need."""
        if not self._metrics.enabled or time.monotonic() < self._backlog_due:
            return
        self._backlog_due = time.monotonic() + self._options.backlog_interval_s
        try:
            backlog = await self.backlog()
        except Exception as exc:  # a gauge left stale must not stop delivery
            log.warning("outbox relay: cannot count the backlog (%s)", describe(exc))
            return
        self._metrics.outbox_backlog(backlog.messages, backlog.oldest_age_s)

    async def _claim(self, token: str) -> list[OutboxMessage]:
        async with self._engine.connect() as conn:
            # READ COMMITTED: no gap locks on MySQL, so outbox.add() in business
            # transactions never waits for a claim.
            conn = await conn.execution_options(isolation_level="READ COMMITTED")
            async with conn.begin():
                columns = [outbox.c.id, outbox.c.kind, outbox.c.payload, outbox.c.attempts]
                if await has_trace_column(conn):
                    columns.append(outbox.c.trace)
                due = (
                    select(*columns)
                    .where(
                        outbox.c.status == Status.PENDING.value,
                        outbox.c.available_at <= db_now(conn),
                        outbox.c.kind.in_(sorted(self._senders)),
                    )
                    .order_by(outbox.c.id)
                    .limit(self._options.batch_size)
                    .with_for_update(skip_locked=_has_skip_locked(conn))
                )
                rows = (await conn.execute(due)).all()
                if rows:
                    await conn.execute(
                        update(outbox)
                        .where(outbox.c.id.in_([row.id for row in rows]))
                        .values(
                            claim_token=token,
                            available_at=db_shifted(conn, self._options.lease_s),
                            attempts=outbox.c.attempts + 1,
                        )
                    )
        return [OutboxMessage(r.id, r.kind, r.payload, r.attempts + 1,
                              decode_trace(getattr(r, "trace", None))) for r in rows]

    async def _deliver(self, token: str, message: OutboxMessage) -> _Verdict:
        verdict, error = await self._send(message)
        if verdict is _Verdict.FAILED:
            log.error("outbox message %d (%s) refused for good: %s", message.id, message.kind, error)
        elif verdict is _Verdict.RETRY:
            log.warning("outbox message %d (%s) not delivered: %s", message.id, message.kind, error)
        try:
            await self._record(token, message, verdict, error)
        except Exception as exc:
            # The lease runs out and another pass claims the row again: a redelivery,
            # never a loss.
            log.warning("outbox message %d: cannot record delivery (%s)", message.id, describe(exc))
        return verdict

    async def _send(self, message: OutboxMessage) -> tuple[_Verdict, str]:
        opts = self._options
        retrying = AsyncRetrying(
            stop=stop_after_attempt(opts.send_attempts),
            wait=backoff(opts.initial_backoff_s, opts.send_timeout_s),
            retry=retry_if_not_exception_type(PermanentDeliveryError),
            reraise=True,
        )
        sender = self._senders[message.kind]
        try:
            async with asyncio.timeout(opts.lease_s / 2):
                async for attempt in retrying:
                    with attempt:
                        async with asyncio.timeout(opts.send_timeout_s):
                            with as_current(message.trace):
                                await sender(message)
        except PermanentDeliveryError as exc:
            return _Verdict.FAILED, str(exc)[:_ERROR_CHARS]
        except Exception as exc:
            return _Verdict.RETRY, _describe_send(exc)[:_ERROR_CHARS]
        return _Verdict.SENT, ""

    async def _record(self, token: str, message: OutboxMessage, verdict: _Verdict, error: str) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=backoff(0.05, 1.0),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                async with self._engine.begin() as conn:
                    result = await conn.execute(
                        update(outbox)
                        .where(outbox.c.id == message.id, outbox.c.claim_token == token)
                        .values(**self._outcome_values(conn, message, verdict, error))
                    )
                if result.rowcount == 0:
                    log.warning("outbox message %d: lease ran out before delivery was recorded", message.id)

    def _outcome_values(
        self, conn: AsyncConnection, message: OutboxMessage, verdict: _Verdict, error: str
    ) -> dict[str, object]:
        if verdict is _Verdict.SENT:
            return {
                "status": Status.SENT.value,
                "sent_at": db_now(conn),
                "claim_token": None,
                "last_error": None,
            }
        if verdict is _Verdict.FAILED:
            return {"status": Status.FAILED.value, "claim_token": None, "last_error": error}
        retry_at = db_shifted(conn, self._backoff(message))
        return {"available_at": retry_at, "claim_token": None, "last_error": error}

    def _backoff(self, message: OutboxMessage) -> float:
        """Exponential in the attempts so far, capped, with full jitter on the upper half."""
        opts = self._options
        ceiling = min(opts.max_backoff_s, opts.initial_backoff_s * 2.0 ** min(message.attempts, 32))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _describe_send(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.aio.AioRpcError: the status says it all
        details = getattr(exc, "details", lambda: "")()
        return f"{code().name}: {details or ''}".rstrip(": ")
    return describe(exc)


def _has_skip_locked(conn: AsyncConnection) -> bool:
    """PostgreSQL 9.5+, MySQL 8.0.1+ and MariaDB 10.6+ have it; older ones block instead."""
    if not is_mysql(conn):
        return True
    version = conn.dialect.server_version_info or (0,)
    minimum = (10, 6) if getattr(conn.dialect, "is_mariadb", False) else (8, 0, 1)
    return tuple(version) >= minimum


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters: Sequence[asyncio.Task[bool]] = [
        asyncio.ensure_future(stop.wait()),
        asyncio.ensure_future(wake.wait()),
    ]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
