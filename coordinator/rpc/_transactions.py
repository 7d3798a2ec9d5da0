"""Records as txc.v1.Transaction messages. Pure: the servicer answers reads with them and
the engine sends a settled one as a notice's payload (one conversion for both)."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..domain.records import HistoryEntry, NoticeState, TxRecord


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def entry(h: HistoryEntry) -> pb.HistoryEntry:
    return pb.HistoryEntry(at=timestamp(h.at), actor=h.actor, action=h.action, reason=h.reason)


def transaction(record: TxRecord, payloads: bool = False) -> pb.Transaction:
    """``record`` as the API shows it; ``payloads``: with each branch's payload (only for a
    caller with the read right who asked: never in lists, watches or notices)."""
    message = pb.Transaction(
        gid=record.gid,
        protocol=int(record.protocol),  # type: ignore[arg-type]
        state=int(record.state),  # type: ignore[arg-type]
        branches=[
            pb.BranchStatus(name=p.name, state=int(s.state),  # type: ignore[arg-type]
                            attempts=s.attempts, error=s.error, result=s.result,
                            updated_at=timestamp(s.updated_at), participant=p.participant,
                            action=p.action, compensation=p.compensation,
                            payload=p.payload if payloads else b"",
                            null_compensation=s.null_compensation)
            for p, s in zip(record.plan, record.branches, strict=True)
        ],
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        error=record.error,
        labels=dict(record.labels),
        history=[entry(h) for h in record.history],
        trace_id=record.trace_id,
        decision=record.decision,
        cause=record.cause,
        deadline=None if record.frozen_since else timestamp(record.deadline),
        deadline_moved=_duration(record.deadline_moved_s) if record.deadline_moved_s else None,
        paused=entry(record.paused) if record.paused else None,
        waiting_on_holds=list(record.waiting_on),
    )
    if record.notify is not None:
        n = record.notice
        message.notice.CopyFrom(pb.NoticeStatus(
            participant=record.notify.participant, operation=record.notify.operation,
            state=int(n.state),  # type: ignore[arg-type]
            generation=n.generation, attempts=n.attempts, error=n.error,
            updated_at=timestamp(n.updated_at) if n.state is not NoticeState.NONE else None))
    return message
