"""The transaction record: what the log stores and the state machines transform.

Records are immutable values; a transition returns a new record (``dataclasses.replace``),
which keeps every rule a pure function and makes write-ahead trivial: persist the new
record, then act on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

_TRACE_ID = re.compile(r"(?!0{32})[0-9a-f]{32}")  # a W3C trace id: 32 lowercase hex digits, not all 0


class Protocol(IntEnum):
    """Values mirror txc.v1.Protocol."""

    SAGA = 1
    TWO_PHASE = 2


class TxState(IntEnum):
    """Values mirror txc.v1.TxState."""

    RUNNING = 1
    COMMITTED = 2
    COMPENSATING = 3
    COMPENSATED = 4
    PREPARING = 5
    COMMITTING = 6
    ABORTING = 7
    ABORTED = 8
    FAILED = 9

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_TX

    @property
    def settled(self) -> bool:
        """Terminal, or FAILED: nothing more happens to it without an operator."""
        return self in _TERMINAL_TX or self is TxState.FAILED


_TERMINAL_TX = frozenset({TxState.COMMITTED, TxState.COMPENSATED, TxState.ABORTED})


class BranchState(IntEnum):
    """Values mirror txc.v1.BranchState."""

    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    COMPENSATING = 5
    COMPENSATED = 6
    PREPARED = 7
    VOTED_NO = 8
    COMMITTED = 9
    ABORTED = 10
    SKIPPED = 11


class Op(StrEnum):
    """Participant operations; also the last segment of an idempotency key."""

    EXECUTE = "execute"
    COMPENSATE = "compensate"
    PREPARE = "prepare"
    COMMIT = "commit"
    ABORT = "abort"


_OWED = frozenset({Op.COMPENSATE, Op.COMMIT, Op.ABORT})


def idempotency_key(gid: str, branch: str, op: str) -> str:
    """The key a participant deduplicates one call by: ``{gid}/{branch}/{op}``. Every attempt
    of the same call carries the same key (the protocol's exactly-once rests on it).

    A notice's "branch" is ``/notify`` (``/notify/N`` for the N-th settlement): no branch
    name holds a '/', so it never meets a branch's row; its key is ``{gid}/notify[/N]``."""
    if branch.startswith("/"):
        return f"{gid}{branch}"
    return f"{gid}/{branch}/{op}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry budget of one branch's calls (``BranchPlan.retry`` for its action,
    ``compensation_retry`` for what undoes or finishes it)."""

    max_attempts: int = 0  # 0 = until the transaction's deadline
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 10.0
    multiplier: float = 2.0


@dataclass(frozen=True, slots=True)
class BranchPlan:
    """What the caller asked for one branch; never changes after the transaction starts."""

    name: str
    participant: str
    action: str
    compensation: str = ""
    payload: bytes = b""
    after: tuple[str, ...] = ()
    timeout_s: float = 5.0
    retry: RetryPolicy = RetryPolicy()
    # Compensate, 2PC Commit and Abort: owed once the outcome is decided, so never capped
    # by the action's max_attempts (by default: until acknowledged, within the phase budget).
    compensation_retry: RetryPolicy = RetryPolicy()

    def retry_for(self, op: str) -> RetryPolicy:
        """The policy of ``op``'s calls: the action's, or for a call that undoes or
        finishes the transaction, the compensation's."""
        return self.compensation_retry if op in _OWED else self.retry


@dataclass(frozen=True, slots=True)
class NotifyPlan:
    """Whom to tell when the transaction settles: ``operation`` at ``participant``, called
    as an Execute whose payload is the settled txc.v1.Transaction."""

    participant: str
    operation: str
    retry: RetryPolicy = RetryPolicy()
    budget_s: float = 3600.0  # retried for this long after the settlement, then given up
    timeout_s: float = 5.0  # per attempt


class NoticeState(IntEnum):
    """Values mirror txc.v1.NoticeState."""

    NONE = 0  # nothing settled yet (or no notify target)
    PENDING = 1  # written with the settlement; being delivered
    ACKNOWLEDGED = 2
    GAVE_UP = 3  # refused, misconfigured, or out of budget
    SUPERSEDED = 4  # a FAILED transaction resumed by an operator before it was acknowledged


@dataclass(frozen=True, slots=True)
class NoticeStatus:
    """Where the notice of the latest settlement stands. ``generation`` counts settlements
    noticed: the first is keyed ``{gid}/notify``, a later one ``{gid}/notify/N``."""

    state: NoticeState = NoticeState.NONE
    generation: int = 0
    attempts: int = 0
    error: str = ""
    started_at: float = 0.0  # when it was armed: its budget runs from here, on any owner
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class BranchStatus:
    """Where one branch stands."""

    state: BranchState = BranchState.PENDING
    attempts: int = 0
    error: str = ""
    result: bytes = b""
    updated_at: float = 0.0
    # COMPENSATED with nothing undone: the participant said the action never ran there.
    null_compensation: bool = False


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: float
    actor: str
    action: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TxRecord:
    """One distributed transaction: its immutable plan and its current progress.

    ``seq`` counts the writes of this record; the log uses it to recognise its own write
    when a compare-and-swap is retried after an ambiguous failure.
    """

    gid: str
    protocol: Protocol
    state: TxState
    plan: tuple[BranchPlan, ...]
    branches: tuple[BranchStatus, ...]
    created_at: float
    updated_at: float
    deadline: float
    concurrent: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    error: str = ""
    # The first error the transaction had (domain._common.erred): replay and skip change
    # ``error``, the audit keeps why it first left its normal path.
    cause: str = ""
    history: tuple[HistoryEntry, ...] = ()
    phase_started_at: float = 0.0  # when the current phase (e.g. compensation) began
    decision: str = ""  # 2PC: "commit" or "abort" once decided
    seq: int = 0
    timeout_s: float = 0.0  # as asked (after defaults); ``deadline`` is created_at + timeout_s
    # Identifies the payloads once the log no longer keeps them (a finished transaction),
    # so that a repeated start can still be told apart from a different one.
    payload_digest: str = ""
    # The trace this transaction's spans belong to (an OpenTelemetry carrier: W3C
    # traceparent, ...), so that whichever coordinator drives it continues that trace;
    # empty when it was started untraced. Not part of the plan: a retried start may come
    # from another trace.
    trace: tuple[tuple[str, str], ...] = ()
    # Holds and pauses (domain.holds): since when its clock stands still (0: it runs), the
    # held addresses it waits on, the pause in force, and how far its deadline has moved.
    frozen_since: float = 0.0
    waiting_on: tuple[str, ...] = ()
    paused: HistoryEntry | None = None
    deadline_moved_s: float = 0.0
    notify: NotifyPlan | None = None  # part of the plan: who hears of the settlement
    notice: NoticeStatus = NoticeStatus()
    # A saga's creation announces every branch's intent at once (domain.durability): while
    # set, a branch shown PENDING may have been called all the same, and is compensated as
    # one that may have run. Its creator drives with it cleared (it knows what it called).
    intents_ahead: bool = False

    @property
    def finished(self) -> bool:
        """Settled, and no notice of it still to deliver: nothing more happens to it
        without an operator, and no coordinator needs to own it."""
        return self.state.settled and self.notice.state is not NoticeState.PENDING

    @property
    def trace_id(self) -> str:
        """The W3C trace id in ``trace`` (32 hex digits); "" when untraced (or unreadable)."""
        parts = dict(self.trace).get("traceparent", "").split("-")
        found = parts[1] if len(parts) == 4 else ""
        return found if _TRACE_ID.fullmatch(found) else ""

    def status(self, name: str) -> BranchStatus:
        return self.branches[self.index(name)]

    def index(self, name: str) -> int:
        for i, plan in enumerate(self.plan):
            if plan.name == name:
                return i
        raise KeyError(name)

    def with_branch(self, name: str, status: BranchStatus) -> TxRecord:
        i = self.index(name)
        return replace(self, branches=(*self.branches[:i], status, *self.branches[i + 1 :]))

    def same_plan(self, other: TxRecord) -> bool:
        """True when ``other`` asks for the same work (idempotent starts): every field a start
        request sets but the gid, compared after defaults are applied."""
        return (
            self.protocol == other.protocol
            and _without_payloads(self.plan) == _without_payloads(other.plan)
            and self.payload_digest == other.payload_digest
            and self.concurrent == other.concurrent
            and self.timeout_s == other.timeout_s
            and dict(self.labels) == dict(other.labels)
            and self.notify == other.notify
        )


def _without_payloads(plan: tuple[BranchPlan, ...]) -> tuple[BranchPlan, ...]:
    return tuple(replace(p, payload=b"") for p in plan)


def payload_digest(plan: tuple[BranchPlan, ...]) -> str:
    """SHA-256 over every branch's payload (each after its length)."""
    digest = hashlib.sha256()
    for p in plan:
        digest.update(len(p.payload).to_bytes(4, "big"))
        digest.update(p.payload)
    return digest.hexdigest()


def new_record(
    *,
    gid: str,
    protocol: Protocol,
    plan: tuple[BranchPlan, ...],
    now: float,
    timeout_s: float,
    concurrent: bool = False,
    labels: dict[str, str] | None = None,
    trace: tuple[tuple[str, str], ...] = (),
    notify: NotifyPlan | None = None,
) -> TxRecord:
    """A fresh record with every branch pending; the state machine's ``start`` moves it."""
    initial = TxState.RUNNING if protocol is Protocol.SAGA else TxState.PREPARING
    return TxRecord(
        gid=gid,
        protocol=protocol,
        state=initial,
        plan=plan,
        branches=tuple(BranchStatus(updated_at=now) for _ in plan),
        created_at=now,
        updated_at=now,
        deadline=now + timeout_s,
        timeout_s=timeout_s,
        payload_digest=payload_digest(plan),
        trace=trace,
        notify=notify,
        concurrent=concurrent,
        labels=tuple(sorted((labels or {}).items())),
        phase_started_at=now,
    )


@dataclass(frozen=True, slots=True)
class Call:
    """An instruction to the driver: call ``op`` on ``branch`` (after persisting the record)."""

    branch: str
    op: str


@dataclass(frozen=True, slots=True)
class Transition:
    """What a transition yields: the record to persist and the calls to make afterwards.

    ``record`` is the very object passed in when the event changed nothing, so the driver
    can skip the write (``step.record is current``).
    """

    record: TxRecord
    calls: tuple[Call, ...] = field(default=())
