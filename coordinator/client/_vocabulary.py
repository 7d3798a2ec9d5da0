"""The operator vocabulary the CLI, the console and the chaos harness share: the short
lower-case names people read and type for the API's enums (``failed``, ``2pc``), ages
(``90s``, ``10m``), and which gRPC answers mean "the coordinator could not be reached"."""

from __future__ import annotations

import re
from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from .._proto.txc.v1 import coordinator_pb2 as pb

STATES: dict[str, pb.TxState.ValueType] = {name.removeprefix("TX_STATE_").lower(): value
                                          for name, value in pb.TxState.items() if value}
"""Transaction state names (``running``, ``failed``...) to their enum values."""

PROTOCOLS: dict[str, pb.Protocol.ValueType] = {"saga": pb.PROTOCOL_SAGA, "2pc": pb.PROTOCOL_TWO_PHASE}

UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""Answers that say nothing about the request, only that no coordinator answered in time:
worth trying again (another coordinator, later), never a refusal."""

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def state_name(value: int) -> str:
    return pb.TxState.Name(value).removeprefix("TX_STATE_").lower()  # type: ignore[arg-type]


def branch_state_name(value: int) -> str:
    return pb.BranchState.Name(value).removeprefix("BRANCH_STATE_").lower()  # type: ignore[arg-type]


def shown_branch_state(tx: pb.Transaction, b: pb.BranchStatus) -> str:
    """The branch state people read. A 2PC branch whose Prepare went unanswered is RUNNING
    in the record while the decided Abort is sent to it: "aborting", not "running". A
    compensation that found nothing to undo (the action never ran there): "null
    compensation", not "compensated"."""
    if tx.decision == "abort" and b.state == pb.BRANCH_STATE_RUNNING:
        return "aborting"
    if b.null_compensation and b.state == pb.BRANCH_STATE_COMPENSATED:
        return "null compensation"
    return branch_state_name(b.state)


def branch_where(protocol: int, b: pb.BranchStatus) -> str:
    """Where a branch lives and what it runs, e.g. "at inventory:7001, action stock.reserve,
    compensation stock.release" ("?" for what a coordinator did not say)."""
    if protocol == pb.PROTOCOL_TWO_PHASE:
        return f"at {b.participant or '?'}, operation {b.action or '?'}"
    undo = f"compensation {b.compensation}" if b.compensation else "no compensation"
    return f"at {b.participant or '?'}, action {b.action or '?'}, {undo}"


def notice_text(n: pb.NoticeStatus) -> str:
    """How a transaction's notice stands, as people read it, e.g. "orders.settled at
    orders:7002, acknowledged (notice 1, 3 attempts)" (txc tx show and the console)."""
    state = pb.NoticeState.Name(n.state).removeprefix("NOTICE_STATE_").lower()
    state = "when settled" if n.state == pb.NOTICE_STATE_UNSPECIFIED else state.replace("_", " ")
    text = f"{n.operation} at {n.participant}, {state}"
    if n.generation:
        text += f" (notice {n.generation}" + (f", {n.attempts} attempts)" if n.attempts else ")")
    return text + (f": {n.error}" if n.error else "")


def protocol_name(value: int) -> str:
    names: dict[int, str] = {v: k for k, v in PROTOCOLS.items()}
    return names.get(value, "?")


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``10m``, ``2h`` or ``1.5d``; ValueError otherwise."""
    match = _AGE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration: try 90s, 10m, 2h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def is_unreachable(code: grpc.StatusCode | None) -> bool:
    return code in UNREACHABLE


def clock_notes(tx: pb.Transaction, when: Callable[[Timestamp], str]) -> list[str]:
    """Its deadline, how far holds and pauses moved it, and why it stands still now (one
    line each, for txc tx show and the console; ``when`` formats a time)."""
    out: list[str] = []
    moved = tx.deadline_moved.ToTimedelta().total_seconds() if tx.HasField("deadline_moved") else 0
    by = f" (moved {moved:.1f} s by holds and pauses)" if moved else ""
    if tx.state not in (pb.TX_STATE_RUNNING, pb.TX_STATE_PREPARING):
        if moved:
            out.append(f"deadline moved {moved:.1f} s by holds and pauses")
    elif tx.HasField("deadline"):
        out.append(f"deadline: {when(tx.deadline)}{by}")
    else:
        out.append(f"deadline: standing still while it waits{by}")
    if tx.HasField("paused"):
        p = tx.paused
        out.append(f"PAUSED since {when(p.at)} by {p.actor}: {p.reason}")
        prepared = sum(1 for b in tx.branches if b.state == pb.BRANCH_STATE_PREPARED)
        if prepared:
            out.append(f"{prepared} branch(es) prepared: their participants hold locks until "
                       "it is resumed")
    if tx.waiting_on_holds:
        out.append("waiting on held participant(s): " + ", ".join(tx.waiting_on_holds))
    return out
