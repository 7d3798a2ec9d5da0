"""The spans of a branch call on the participant's side: names and attributes in one place.

A call continues the coordinator's trace (the context it sent: gRPC metadata on a unary
call, ``BranchCall.metadata`` on the Batch stream):

* ``txc.participant.<op>`` (server): the whole call, with its outcome;
* ``txc.barrier`` / ``txc.two_phase.local``: the local transaction with its barrier row
  (or the prepared transaction), retries on serialization failures included;
* ``<operation>`` (e.g. ``accounts.debit``): the business function, current while it runs,
  so the service's own instrumented calls (SQL, HTTP) nest under it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator._proto.txc.v1 import participant_pb2 as ppb
from coordinator.participant._handlers import BranchContext
from coordinator.participant._local import BusinessFn, Refused
from coordinator.participant._types import MAX_ID_CHARS, Op, Outcome, Reply
from coordinator.telemetry._tracing import TRACEPARENT, SpanHandle, Tracing


def call(tracing: Tracing, op: Op, request: ppb.BranchRequest,
         trace: Mapping[str, str] | None) -> AbstractContextManager[SpanHandle]:
    # No context from the caller: a trace of the call's own rather than none.
    parent = trace if trace and TRACEPARENT in trace else None
    return tracing.span(f"txc.participant.{op}", parent=parent, kind="server", attributes={
        "txc.gid": request.gid[:MAX_ID_CHARS], "txc.branch": request.branch[:MAX_ID_CHARS],
        "txc.attempt": request.attempt})


def answered(span: SpanHandle, reply: Reply) -> None:
    span.set("txc.outcome", reply.outcome.name.lower())
    if reply.outcome is Outcome.RETRY:  # FAILED is a business refusal, not an error
        span.fail(reply.message)


def handler(tracing: Tracing, ctx: BranchContext, business: BusinessFn | None) -> BusinessFn | None:
    """``business`` inside a span named after its operation (as registered)."""
    if business is None or not tracing.enabled:
        return business
    traced = business

    async def in_span(conn: AsyncConnection) -> bytes | None:
        # A refusal is the business saying no, not a failure of the span.
        with tracing.span(ctx.operation, attributes={"txc.op": str(ctx.op)}, quiet=(Refused,)):
            return await traced(conn)

    return in_span
