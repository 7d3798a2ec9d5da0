"""The spans of a transaction's work: their names and attributes, in one place.

Every span of a transaction is a child of the context stored in its record (the span of
the call that started it, or of the operator's replay), so that the coordinators that
drive it in turn all add to one trace:

* ``txc.log.create`` / ``txc.log.write``: a write of the record to the log, with an event
  per retry while etcd is away;
* ``txc.<op>`` (client): one attempt of a participant call; its context goes with the call;
* ``txc.saga`` / ``txc.two_phase``: the transaction from creation to settling, recorded by
  the coordinator that settles it (one that crashed never ends its spans);
* ``txc.takeover``: a coordinator claimed the transaction after its owner went away.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from ..domain.records import BranchPlan, TxRecord
from ..telemetry._metrics import protocol_label
from ..telemetry._tracing import SpanHandle, Tracing
from ._dispatch import Answer, Kind, operation


def call(tracing: Tracing, record: TxRecord, plan: BranchPlan, op: str,
         attempt: int) -> AbstractContextManager[SpanHandle]:
    return tracing.span(f"txc.{op}", parent=dict(record.trace), kind="client", attributes={
        "txc.gid": record.gid, "txc.branch": plan.name, "txc.operation": operation(plan, op),
        "txc.attempt": attempt, "txc.participant": plan.participant})


def answered(span: SpanHandle, answer: Answer) -> None:
    span.set("txc.outcome", answer.kind.value)
    if answer.kind in (Kind.UNKNOWN, Kind.MISCONFIGURED):
        span.fail(answer.message)  # a FAILED answer is the participant's business refusal


def write(tracing: Tracing, record: TxRecord, kind: str = "write") -> AbstractContextManager[SpanHandle]:
    return tracing.span(f"txc.log.{kind}", parent=dict(record.trace), attributes={
        "txc.gid": record.gid, "txc.state": record.state.name})


def settled(tracing: Tracing, record: TxRecord, now: float) -> None:
    tracing.record(f"txc.{protocol_label(record.protocol)}", record.created_at, now,
                   parent=dict(record.trace), attributes={
                       "txc.gid": record.gid, "txc.state": record.state.name,
                       "txc.branches": len(record.plan)})


def taken_over(tracing: Tracing, record: TxRecord, now: float) -> None:
    tracing.record("txc.takeover", now, now, parent=dict(record.trace), attributes={
        "txc.gid": record.gid, "txc.state": record.state.name})
