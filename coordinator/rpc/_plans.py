"""Start requests (txc.v1 messages) read as domain plans, and checked as the coordinator
checks them. Pure: protobuf in, domain values out, no I/O.

The coordinator's servicer reads every start through these functions, and the participant
SDK's outbox checks a plan with :func:`check_saga_request` when it is written: one set of
rules, and a participant process that imports them loads no server or engine module.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.duration_pb2 import Duration

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..domain.addresses import AllowList
from ..domain.errors import InvalidArgument
from ..domain.records import BranchPlan, NotifyPlan, Protocol, RetryPolicy
from ..domain.validation import Limits, check_start

# The server's defaults for a zero (unset) duration; coordinator.proto documents them.
DEFAULT_SAGA_TIMEOUT_S = 60.0
DEFAULT_TWO_PHASE_TIMEOUT_S = 30.0
DEFAULT_BRANCH_TIMEOUT_S = 5.0
DEFAULT_NOTIFY_BUDGET_S = 3600.0


def seconds(d: Duration, field: str) -> float:
    """A duration in seconds; negative ones are refused naming ``field``."""
    value = d.seconds + d.nanos / 1e9
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return value


def retry_policy(msg: pb.RetryPolicy, field: str, defaults: RetryPolicy) -> RetryPolicy:
    """A branch's retry policy; unset (zero) values take ``defaults``."""
    initial = seconds(msg.initial_backoff, f"{field}.initial_backoff") or defaults.initial_backoff_s
    maximum = seconds(msg.max_backoff, f"{field}.max_backoff") or max(defaults.max_backoff_s, initial)
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
        timeout_s=seconds(msg.timeout, f"{field}.timeout") or default_timeout_s,
        retry=retry_policy(msg.retry, f"{field}.retry", RetryPolicy()),
        compensation_retry=retry_policy(msg.compensation_retry, f"{field}.compensation_retry",
                                        RetryPolicy()),
    )


def plan_of(branches: Iterable[pb.Branch], default_timeout_s: float) -> tuple[BranchPlan, ...]:
    """Every branch of a start request, in order."""
    return tuple(branch_plan(b, i, default_timeout_s) for i, b in enumerate(branches))


def notify_of(msg: pb.StartSagaRequest | pb.StartTwoPhaseRequest) -> NotifyPlan | None:
    """A start's notify target; None when the field is unset."""
    if not msg.HasField("notify"):
        return None
    n = msg.notify
    return NotifyPlan(
        participant=n.participant,
        operation=n.operation,
        retry=retry_policy(n.retry, "notify.retry", RetryPolicy()),
        budget_s=seconds(n.budget, "notify.budget") or DEFAULT_NOTIFY_BUDGET_S,
        timeout_s=seconds(n.timeout, "notify.timeout") or DEFAULT_BRANCH_TIMEOUT_S,
    )


def check_saga_request(msg: pb.StartSagaRequest, limits: Limits | None = None,
                       allow: AllowList | None = None) -> None:
    """Raise :class:`InvalidArgument` (naming the field) for a StartSaga the coordinator
    would refuse as malformed, with its default ``limits`` and any participant allowed
    unless ``allow`` says otherwise. What only the serving coordinator knows (its own
    limits and allow-list, whether the record fits one etcd write) is checked there."""
    check_start(
        msg.gid, Protocol.SAGA, plan_of(msg.branches, DEFAULT_BRANCH_TIMEOUT_S),
        seconds(msg.timeout, "timeout") or DEFAULT_SAGA_TIMEOUT_S, msg.concurrent,
        dict(msg.labels), limits or Limits(), allow or AllowList(), notify_of(msg))
