"""The local message table: write a message in the service's own transaction.

The row commits or rolls back with the business change it belongs to; the relay
(:mod:`._relay`) delivers it afterwards. A crash between the commit and the delivery
loses nothing: the row is still pending when a relay next looks.
"""

from __future__ import annotations

import json
import logging
import weakref
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import Engine, insert, inspect
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator._proto.txc.v1 import coordinator_pb2 as cpb
from coordinator.client._coordinator import Saga
from coordinator.domain.errors import InvalidArgument
from coordinator.participant._db.errors import ParticipantError
from coordinator.participant._db.sql import blob, db_now, db_shifted
from coordinator.participant._db.tables import OUTBOX_TABLE, TRACE_CHARS, outbox
from coordinator.rpc._plans import check_saga_request
from coordinator.telemetry._tracing import TRACEPARENT, bounded_carrier, current_carrier

__all__ = ["START_SAGA", "OutboxError", "OutboxMessage", "Status", "add", "add_start_saga"]

log = logging.getLogger("coordinator.participant.relay")

START_SAGA = "txc.start_saga"
"""Kind of the messages that carry a txc.v1.StartSagaRequest."""

_MAX_KIND = 64


class Status(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # refused for good by the receiver; kept for an operator
    DISCARDED = "discarded"  # an operator decided it is never to be sent (txc outbox discard)


class OutboxError(ParticipantError):
    """A message that cannot be written as asked."""


@dataclass(frozen=True)
class OutboxMessage:
    """A claimed row, as the relay hands it to a sender."""

    id: int
    kind: str
    payload: bytes
    attempts: int  # deliveries tried so far, this one included
    # The trace context the message was written in; the relay makes it current while the
    # sender runs, so a saga started from the outbox joins the trace of the business
    # transaction that wrote it.
    trace: dict[str, str] = field(default_factory=dict)


async def add(conn: AsyncConnection, kind: str, payload: bytes, *, delay_s: float = 0.0) -> int:
    """Queue a message in the caller's open transaction; returns its id.

    ``delay_s`` holds the message back from the relay for that many seconds.
    """
    if not conn.in_transaction():
        raise OutboxError("outbox.add needs the caller's transaction: use engine.begin()")
    if not kind or len(kind) > _MAX_KIND:
        raise OutboxError(f"message kind must be 1..{_MAX_KIND} characters, got {len(kind)}")
    if delay_s < 0:
        raise OutboxError("delay_s must not be negative")
    stmt = insert(outbox).values(
        kind=kind,
        payload=blob(conn, payload),
        status=Status.PENDING.value,
        attempts=0,
        available_at=db_shifted(conn, delay_s) if delay_s else db_now(conn),
        created_at=db_now(conn),
    )
    trace = encode_trace(current_carrier())
    if trace is not None and await has_trace_column(conn):
        stmt = stmt.values(trace=trace)
    result = await conn.execute(stmt)
    key = result.inserted_primary_key
    assert key is not None  # single-row INSERT into a table with a primary key
    return int(key[0])


async def add_start_saga(conn: AsyncConnection, saga: Saga | cpb.StartSagaRequest) -> int:
    """Queue a StartSaga call; the relay delivers it to the coordinator.

    ``saga``: a :class:`coordinator.Saga` (as ``CoordinatorClient.start_saga`` takes it) or
    the request message. The plan is checked here with the coordinator's own rules (a bad
    one raises :class:`OutboxError` naming the field, so the business transaction can roll
    back instead of committing a message the coordinator would refuse for good). The gid
    must be set: redelivery after a crash relies on StartSaga being idempotent on gid,
    which a server-generated gid would defeat. ``wait`` is cleared: the relay hands the
    saga over and moves on; it does not hold a lease while the saga runs.
    """
    message = cpb.StartSagaRequest()
    message.CopyFrom(saga.to_proto() if isinstance(saga, Saga) else saga)
    if not message.gid:
        raise OutboxError("StartSagaRequest.gid must be set for outbox delivery")
    try:
        check_saga_request(message)
    except InvalidArgument as exc:
        raise OutboxError(f"StartSagaRequest.{exc}: the coordinator would refuse this saga") from None
    message.wait = False
    return await add(conn, START_SAGA, message.SerializeToString())


_TRACE_COLUMN: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


async def has_trace_column(conn: AsyncConnection) -> bool:
    """Whether this database's outbox has the ``trace`` column (revision 0004_outbox_trace).
    A service may run this SDK before ``txc migrate`` has: its messages must keep flowing,
    without their traces until then. Asked once per engine (and process)."""
    engine = conn.sync_engine
    known = _TRACE_COLUMN.get(engine)
    if known is None:
        known = await conn.run_sync(
            lambda sync: any(c["name"] == "trace" for c in inspect(sync).get_columns(OUTBOX_TABLE)))
        _TRACE_COLUMN[engine] = known
        if not known:
            log.warning("%s has no trace column: run txc migrate; until then outbox messages "
                        "do not carry their trace", OUTBOX_TABLE)
    return known


def encode_trace(carrier: dict[str, str]) -> str | None:
    """The column's value for a carrier (None: written outside any trace). Never longer
    than the column: a carrier whose JSON would be (non-ASCII baggage, escaped) keeps only
    its traceparent, so writing a message never fails for its trace."""
    if not carrier:
        return None
    encoded = json.dumps(carrier, separators=(",", ":"))
    if len(encoded) <= TRACE_CHARS:
        return encoded
    kept = {k: v for k, v in carrier.items() if k == TRACEPARENT}
    return json.dumps(kept, separators=(",", ":"))[:TRACE_CHARS] if kept else None


def decode_trace(stored: str | None) -> dict[str, str]:
    """A carrier from the column; a value that is not one (edited by hand) means none."""
    try:
        value = json.loads(stored) if stored else {}
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return bounded_carrier({k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)})
