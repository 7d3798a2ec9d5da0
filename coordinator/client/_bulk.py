"""Actions on many transactions at once (``txc tx ... --all``, the console's filtered list):
which transactions an action applies to, by the same rules the coordinator enforces, so a
dry run lists exactly what the action would then be sent for."""

from __future__ import annotations

from collections.abc import Callable

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..domain.operator import may_abort, may_replay
from ..domain.records import Protocol, TxState
from ._coordinator import CoordinatorClient, settled

DONE = {"replay": "replayed", "abort": "aborted", "pause": "paused", "resume": "resumed"}
"""The bulk actions, and how their outcome is said."""

_APPLIES: dict[str, Callable[[pb.Transaction], bool]] = {
    "replay": lambda t: may_replay(TxState(t.state)),
    "abort": lambda t: may_abort(Protocol(t.protocol), TxState(t.state), t.decision),
    "pause": lambda t: not settled(t) and not t.HasField("paused"),
    "resume": lambda t: t.HasField("paused"),
}


def applies(action: str, tx: pb.Transaction) -> bool:
    """``action`` would act on ``tx`` as it stands."""
    return _APPLIES[action](tx)


async def perform(client: CoordinatorClient, action: str, gid: str, reason: str) -> pb.Transaction:
    """Send ``action`` (one of DONE) for one transaction."""
    act = {"replay": client.replay, "abort": client.abort, "pause": client.pause,
           "resume": client.resume}[action]
    return await act(gid, reason)
