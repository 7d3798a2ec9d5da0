"""What an operator does with the outbox: list its rows, put a failed one back to pending,
discard one so that it is never sent (``txc outbox list|retry|discard``).

Payloads are never shown: a StartSaga message's gid is read out of its payload, nothing
else. Retry and discard each leave a note in the row's ``last_error`` (who, why, and the
error before) and one WARNING log line: a discarded row keeps its note for good; a retried
one keeps it until the relay's next outcome, so the log line is its lasting record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import DecodeError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator._proto.txc.v1 import coordinator_pb2 as cpb
from coordinator.domain.errors import InvalidArgument
from coordinator.domain.validation import Limits, check_reason
from coordinator.participant._db.sql import db_now
from coordinator.participant._db.tables import MESSAGE_CHARS, outbox
from coordinator.participant.outbox._messages import START_SAGA, Status

log = logging.getLogger("coordinator.participant.outbox")

UNSENT = (Status.PENDING, Status.FAILED, Status.DISCARDED)


@dataclass(frozen=True)
class OutboxRow:
    """One message as an operator sees it (no payload)."""

    id: int
    kind: str
    status: str
    gid: str
    """A StartSaga message's gid ("" for other kinds, "?" when the payload does not decode)."""
    attempts: int
    created_at: datetime
    available_at: datetime
    last_error: str


@dataclass(frozen=True)
class Change:
    """What ``retry`` or ``discard`` did to one id: ``done``, or why not (``problem``)."""

    id: int
    done: bool
    problem: str = ""


async def messages(engine: AsyncEngine, *, statuses: Iterable[Status] = UNSENT, kind: str = "",
                   limit: int = 100) -> list[OutboxRow]:
    """Rows with these statuses (and ``kind``, if given), newest first."""
    t = outbox
    query = (select(t.c.id, t.c.kind, t.c.status, t.c.payload, t.c.attempts, t.c.created_at,
                    t.c.available_at, t.c.last_error)
             .where(t.c.status.in_([s.value for s in statuses]))
             .order_by(t.c.id.desc()).limit(limit))
    if kind:
        query = query.where(t.c.kind == kind)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [OutboxRow(r.id, r.kind, r.status, _gid(r.kind, r.payload), r.attempts, r.created_at,
                      r.available_at, r.last_error or "") for r in rows]


async def failed_ids(engine: AsyncEngine, kind: str = "") -> list[int]:
    """Every failed message (of ``kind``, if given), oldest first."""
    query = select(outbox.c.id).where(outbox.c.status == Status.FAILED.value).order_by(outbox.c.id)
    if kind:
        query = query.where(outbox.c.kind == kind)
    async with engine.connect() as conn:
        return list((await conn.execute(query)).scalars())


async def retry(engine: AsyncEngine, ids: Sequence[int], *, actor: str, reason: str) -> list[Change]:
    """Put failed messages back to pending, due now (their attempts are kept)."""
    _check_reason(reason)
    async with engine.begin() as conn:
        found = await _locked(conn, ids)
        changes = [_check(i, found.get(i), (Status.FAILED,), conn_now=None) for i in ids]
        for change in changes:
            if change.done:
                error = found[change.id][2]
                await _mark(conn, change.id, "retried", actor, reason, error,
                            status=Status.PENDING.value, available_at=db_now(conn))
    _audit("retried (pending again)", changes, actor, reason)
    return changes


async def discard(engine: AsyncEngine, ids: Sequence[int], *, actor: str, reason: str) -> list[Change]:
    """Mark pending or failed messages discarded: no relay ever sends them. A message a
    relay has claimed and is delivering right now is refused (its lease has not run out)."""
    _check_reason(reason)
    async with engine.begin() as conn:
        found = await _locked(conn, ids)
        now = (await conn.execute(select(db_now(conn)))).scalar_one()
        changes = [_check(i, found.get(i), (Status.PENDING, Status.FAILED), conn_now=now)
                   for i in ids]
        for change in changes:
            if change.done:
                await _mark(conn, change.id, "discarded", actor, reason, found[change.id][2],
                            status=Status.DISCARDED.value)
    _audit("discarded (never to be sent)", changes, actor, reason)
    return changes


_Found = tuple[str, datetime | None, str]  # status, available_at if claimed, last_error


async def _locked(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, _Found]:
    t = outbox
    rows = (await conn.execute(
        select(t.c.id, t.c.status, t.c.claim_token, t.c.available_at, t.c.last_error)
        .where(t.c.id.in_(list(ids))).with_for_update())).all()
    return {r.id: (r.status, r.available_at if r.claim_token else None, r.last_error or "")
            for r in rows}


def _check_reason(reason: str) -> None:
    """The coordinator's rule for an operator's reason; raises ValueError naming it."""
    try:
        check_reason(reason, Limits())
    except InvalidArgument as exc:
        raise ValueError(str(exc)) from None


def _check(message_id: int, found: _Found | None, allowed: tuple[Status, ...],
           conn_now: datetime | None) -> Change:
    if found is None:
        return Change(message_id, False, "no such message")
    status, claimed_until, _ = found
    if status not in {s.value for s in allowed}:
        wanted = " or ".join(s.value for s in allowed)
        return Change(message_id, False, f"is {status}, not {wanted}")
    if conn_now is not None and claimed_until is not None and claimed_until > conn_now:
        return Change(message_id, False, "a relay is delivering it now; try again once its "
                                         "lease has run out")
    return Change(message_id, True)


async def _mark(conn: AsyncConnection, message_id: int, action: str, actor: str, reason: str,
                error: str, **values: object) -> None:
    note = f"{action} by {actor}: {reason}" + (f" (last error: {error})" if error else "")
    await conn.execute(update(outbox).where(outbox.c.id == message_id).values(
        claim_token=None, last_error=note[:MESSAGE_CHARS], **values))


def _audit(what: str, changes: list[Change], actor: str, reason: str) -> None:
    done = [c.id for c in changes if c.done]
    if done:
        log.warning("outbox messages %s %s by %s: %s", ",".join(map(str, done)), what, actor,
                    reason)


def _gid(kind: str, payload: bytes) -> str:
    if kind != START_SAGA:
        return ""
    try:
        return cpb.StartSagaRequest.FromString(payload).gid
    except DecodeError:
        return "?"
