"""The short lower-case names people read for the API's enums (``failed``, ``2pc``)."""

from __future__ import annotations

from .._proto.txc.v1 import coordinator_pb2 as pb


def state_name(value: int) -> str:
    return pb.TxState.Name(value).removeprefix("TX_STATE_").lower()  # type: ignore[arg-type]


def branch_state_name(value: int) -> str:
    return pb.BranchState.Name(value).removeprefix("BRANCH_STATE_").lower()  # type: ignore[arg-type]


def protocol_name(value: int) -> str:
    names: dict[int, str] = {pb.PROTOCOL_SAGA: "saga", pb.PROTOCOL_TWO_PHASE: "2pc"}
    return names.get(value, "?")
