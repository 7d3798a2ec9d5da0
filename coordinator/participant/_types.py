"""Value types shared by the barrier, the host and the relay."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from coordinator._proto.txc.v1 import participant_pb2 as ppb

# The SDK's ops are the coordinator's, one enum for both sides: re-exported from here.
from coordinator.domain.records import Op

__all__ = ["MAX_ID_CHARS", "BranchKey", "Op", "Outcome", "Reply", "forward_of"]

# Column widths of the barrier key; requests with longer ids are refused up front
# rather than silently truncated by the database.
MAX_ID_CHARS = 128

# What each undo op undoes (compensate -> execute, abort -> prepare).
_FORWARD = {Op.COMPENSATE: Op.EXECUTE, Op.ABORT: Op.PREPARE}


def forward_of(op: Op) -> Op | None:
    """The operation ``op`` undoes; None for forward operations."""
    return _FORWARD.get(op)


class Outcome(IntEnum):
    """Values mirror txc.v1.Outcome."""

    OK = 1
    FAILED = 2
    RETRY = 3


@dataclass(frozen=True)
class Reply:
    """What a branch call answers; converts to a txc.v1.BranchReply."""

    outcome: Outcome
    result: bytes = b""
    message: str = ""
    null_compensation: bool = False  # an OK compensate: its action never ran here

    def to_proto(self) -> ppb.BranchReply:
        return ppb.BranchReply(
            outcome=ppb.Outcome.Value(f"OUTCOME_{self.outcome.name}"),
            result=self.result,
            message=self.message,
            null_compensation=self.null_compensation,
        )


@dataclass(frozen=True)
class BranchKey:
    """Identity of one barrier row: (gid, branch, op)."""

    gid: str
    branch: str
    op: Op

    def __post_init__(self) -> None:
        for name in ("gid", "branch"):
            value: str = getattr(self, name)
            if not value:
                raise ValueError(f"{name} must not be empty")
            if len(value) > MAX_ID_CHARS:
                raise ValueError(f"{name} is {len(value)} characters; at most {MAX_ID_CHARS}")

    def with_op(self, op: Op) -> BranchKey:
        return BranchKey(self.gid, self.branch, op)
