"""The local message table and its relay.

``outbox.add(conn, ...)`` / ``outbox.add_start_saga(conn, saga)`` write a message in the
service's own transaction; :class:`Relay` delivers pending messages afterwards through a
sender per kind (:class:`StartSagaSender` for ``START_SAGA``). ``messages``, ``retry`` and
``discard`` are the operator's side (``txc outbox``).
"""

from coordinator.participant.outbox._admin import (
    UNSENT,
    Change,
    OutboxRow,
    discard,
    failed_ids,
    messages,
    retry,
)
from coordinator.participant.outbox._messages import (
    START_SAGA,
    OutboxError,
    OutboxMessage,
    Status,
    add,
    add_start_saga,
)
from coordinator.participant.outbox._relay import (
    OutboxBacklog,
    Relay,
    RelayOptions,
    RelayStats,
    Sender,
)
from coordinator.participant.outbox._start_saga import StartSagaSender

__all__ = [
    "START_SAGA",
    "UNSENT",
    "Change",
    "OutboxBacklog",
    "OutboxError",
    "OutboxMessage",
    "OutboxRow",
    "Relay",
    "RelayOptions",
    "RelayStats",
    "Sender",
    "StartSagaSender",
    "Status",
    "add",
    "add_start_saga",
    "discard",
    "failed_ids",
    "messages",
    "retry",
]
