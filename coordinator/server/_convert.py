"""Proto <-> domain conversion. Field-level problems raise InvalidArgument naming the field;
the plans of start requests are read by ``rpc._plans``, shared with the participant SDK."""

from __future__ import annotations

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..domain.holds import Hold
from ..domain.records import Protocol
from ..engine import StartRequest
from ..rpc._plans import notify_of, plan_of, seconds
from ..rpc._transactions import timestamp, transaction

__all__ = ["hold", "start_saga", "start_two_phase", "transaction"]


def start_saga(msg: pb.StartSagaRequest, default_timeout_s: float,
               default_branch_timeout_s: float) -> StartRequest:
    return StartRequest(
        gid=msg.gid,
        protocol=Protocol.SAGA,
        plan=plan_of(msg.branches, default_branch_timeout_s),
        timeout_s=seconds(msg.timeout, "timeout") or default_timeout_s,
        concurrent=msg.concurrent,
        labels=tuple(sorted(msg.labels.items())),
        notify=notify_of(msg),
    )


def start_two_phase(msg: pb.StartTwoPhaseRequest, default_timeout_s: float,
                    default_branch_timeout_s: float) -> StartRequest:
    return StartRequest(
        gid=msg.gid,
        protocol=Protocol.TWO_PHASE,
        plan=plan_of(msg.branches, default_branch_timeout_s),
        timeout_s=seconds(msg.timeout, "timeout") or default_timeout_s,
        labels=tuple(sorted(msg.labels.items())),
        notify=notify_of(msg),
    )


def hold(h: Hold, waiting_here: int = 0) -> pb.Hold:
    return pb.Hold(address=h.address, actor=h.actor, reason=h.reason, since=timestamp(h.since),
                   refuse_starts=h.refuse_starts, waiting_here=waiting_here)
