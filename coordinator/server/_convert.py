"""Proto <-> domain conversion. Field-level problems raise InvalidArgument naming the field."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..domain.errors import InvalidArgument
from ..domain.records import BranchPlan, Protocol, RetryPolicy, TxRecord
from ..engine import StartRequest


def _seconds(d: Duration, field: str) -> float:
    value = d.seconds + d.nanos / 1e9
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return value


def _retry(msg: pb.RetryPolicy, field: str, defaults: RetryPolicy) -> RetryPolicy:
    initial = _seconds(msg.initial_backoff, f"{field}.initial_backoff") or defaults.initial_backoff_s
    maximum = _seconds(msg.max_backoff, f"{field}.max_backoff") or max(defaults.max_backoff_s, initial)
    if msg.multiplier < 0:
        raise InvalidArgument(f"{field}.multiplier", "must not be negative")
    return RetryPolicy(
        max_attempts=msg.max_attempts,
        initial_backoff_s=initial,
        max_backoff_s=maximum,
        multiplier=msg.multiplier or defaults.multiplier,
    )


def branch_plan(msg: pb.Branch, i: int, default_timeout_s: float) -> BranchPlan:
    field = f"branches[{i}]"
    return BranchPlan(
        name=msg.name,
        participant=msg.participant,
        action=msg.action,
        compensation=msg.compensation,
        payload=msg.payload,
        after=tuple(msg.after),
        timeout_s=_seconds(msg.timeout, f"{field}.timeout") or default_timeout_s,
        retry=_retry(msg.retry, f"{field}.retry", RetryPolicy()),
    )


def start_saga(msg: pb.StartSagaRequest, default_timeout_s: float,
               default_branch_timeout_s: float) -> StartRequest:
    return StartRequest(
        gid=msg.gid,
        protocol=Protocol.SAGA,
        plan=tuple(branch_plan(b, i, default_branch_timeout_s) for i, b in enumerate(msg.branches)),
        timeout_s=_seconds(msg.timeout, "timeout") or default_timeout_s,
        concurrent=msg.concurrent,
        labels=tuple(sorted(msg.labels.items())),
    )


def start_two_phase(msg: pb.StartTwoPhaseRequest, default_timeout_s: float,
                    default_branch_timeout_s: float) -> StartRequest:
    return StartRequest(
        gid=msg.gid,
        protocol=Protocol.TWO_PHASE,
        plan=tuple(branch_plan(b, i, default_branch_timeout_s) for i, b in enumerate(msg.branches)),
        timeout_s=_seconds(msg.timeout, "timeout") or default_timeout_s,
        labels=tuple(sorted(msg.labels.items())),
    )


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def transaction(record: TxRecord) -> pb.Transaction:
    return pb.Transaction(
        gid=record.gid,
        protocol=int(record.protocol),  # type: ignore[arg-type]
        state=int(record.state),  # type: ignore[arg-type]
        branches=[
            pb.BranchStatus(name=p.name, state=int(s.state),  # type: ignore[arg-type]
                            attempts=s.attempts, error=s.error, result=s.result,
                            updated_at=_ts(s.updated_at), participant=p.participant,
                            action=p.action, compensation=p.compensation)
            for p, s in zip(record.plan, record.branches, strict=True)
        ],
        created_at=_ts(record.created_at),
        updated_at=_ts(record.updated_at),
        error=record.error,
        labels=dict(record.labels),
        history=[pb.HistoryEntry(at=_ts(h.at), actor=h.actor, action=h.action, reason=h.reason)
                 for h in record.history],
        trace_id=record.trace_id,
        decision=record.decision,
    )
