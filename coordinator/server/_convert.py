"""Proto <-> domain conversion. Field-level problems raise InvalidArgument naming the field;
the plans of start requests are read by ``rpc._plans``, shared with the participant SDK."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..domain.records import Protocol, TxRecord
from ..engine import StartRequest
from ..rpc._plans import plan_of, seconds


def start_saga(msg: pb.StartSagaRequest, default_timeout_s: float,
               default_branch_timeout_s: float) -> StartRequest:
    return StartRequest(
        gid=msg.gid,
        protocol=Protocol.SAGA,
        plan=plan_of(msg.branches, default_branch_timeout_s),
        timeout_s=seconds(msg.timeout, "timeout") or default_timeout_s,
        concurrent=msg.concurrent,
        labels=tuple(sorted(msg.labels.items())),
    )


def start_two_phase(msg: pb.StartTwoPhaseRequest, default_timeout_s: float,
                    default_branch_timeout_s: float) -> StartRequest:
    return StartRequest(
        gid=msg.gid,
        protocol=Protocol.TWO_PHASE,
        plan=plan_of(msg.branches, default_branch_timeout_s),
        timeout_s=seconds(msg.timeout, "timeout") or default_timeout_s,
        labels=tuple(sorted(msg.labels.items())),
    )


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def transaction(record: TxRecord, payloads: bool = False) -> pb.Transaction:
    """``record`` as the API shows it; ``payloads``: with each branch's payload (only for a
    caller with the read right who asked: never in lists or watches)."""
    return pb.Transaction(
        gid=record.gid,
        protocol=int(record.protocol),  # type: ignore[arg-type]
        state=int(record.state),  # type: ignore[arg-type]
        branches=[
            pb.BranchStatus(name=p.name, state=int(s.state),  # type: ignore[arg-type]
                            attempts=s.attempts, error=s.error, result=s.result,
                            updated_at=_ts(s.updated_at), participant=p.participant,
                            action=p.action, compensation=p.compensation,
                            payload=p.payload if payloads else b"",
                            null_compensation=s.null_compensation)
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
        cause=record.cause,
    )
