"""txcoord participant SDK: exactly-once branch calls for Python services.

* :class:`ParticipantHost` serves txc.v1.Participant from handlers registered per
  operation name (``@host.execute("accounts.debit")``, ``@host.compensate(...)``).
* :class:`Barrier` runs a business function in a local transaction together with its
  barrier row: duplicates, null compensations, hanging requests and concurrent twins
  are handled there.
* ``outbox.add(conn, ...)`` / ``outbox.add_start_saga(conn, request)`` write messages in
  the service's own transaction; :class:`Relay` delivers them (:class:`StartSagaSender`).
* ``@host.prepare("accounts.debit")`` registers a two-phase-commit branch: the handler
  runs inside a local transaction that is prepared (XA on MySQL/MariaDB, PREPARE
  TRANSACTION on PostgreSQL) and later committed or rolled back; :class:`TwoPhase` does
  it without the host. In-doubt branches are finished by a recovery loop that asks the
  coordinator (``HostOptions(two_phase=TwoPhaseOptions(coordinator="host:port"))``).
* :func:`purge` keeps the tables small; :func:`upgrade` (or ``txc migrate``) creates them.

See docs/participant.md.
"""

from coordinator._tls import TlsFiles
from coordinator.participant import _outbox as outbox
from coordinator.participant._barrier import Barrier, BarrierOptions, BusinessFn
from coordinator.participant._dsn import check_connection, create_engine, mask
from coordinator.participant._errors import (
    DsnError,
    ParticipantError,
    PayloadError,
    PermanentDeliveryError,
    Refused,
    is_transient,
)
from coordinator.participant._handlers import BranchContext, Decoder, Handler, json_object, raw
from coordinator.participant._host import HostOptions, ParticipantHost
from coordinator.participant._migrations import (
    VERSION_TABLE,
    MigrationError,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from coordinator.participant._outbox import START_SAGA, OutboxError, OutboxMessage
from coordinator.participant._recovery import (
    CoordinatorDecisions,
    DecisionSource,
    RecoveryReport,
    Verdict,
    verdict_of,
)
from coordinator.participant._relay import Relay, RelayOptions, RelayStats, Sender
from coordinator.participant._retention import PurgeOptions, PurgeResult, purge
from coordinator.participant._start_saga import StartSagaSender
from coordinator.participant._tables import barrier as barrier_table
from coordinator.participant._tables import metadata
from coordinator.participant._tables import outbox as outbox_table
from coordinator.participant._two_phase import Decision, InDoubtBranch, TwoPhase, TwoPhaseOptions
from coordinator.participant._two_phase_db import TwoPhaseUnavailable, check_two_phase
from coordinator.participant._two_phase_retention import purge_two_phase
from coordinator.participant._two_phase_table import XaState
from coordinator.participant._two_phase_table import xa as xa_table
from coordinator.participant._two_phase_xid import XID_PREFIX, xid_for
from coordinator.participant._types import BranchKey, Op, Outcome, Reply

__all__ = [
    "START_SAGA",
    "VERSION_TABLE",
    "XID_PREFIX",
    "Barrier",
    "BarrierOptions",
    "BranchContext",
    "BranchKey",
    "BusinessFn",
    "CoordinatorDecisions",
    "Decision",
    "DecisionSource",
    "Decoder",
    "DsnError",
    "Handler",
    "HostOptions",
    "InDoubtBranch",
    "MigrationError",
    "Op",
    "OutboxError",
    "OutboxMessage",
    "Outcome",
    "ParticipantError",
    "ParticipantHost",
    "PayloadError",
    "PermanentDeliveryError",
    "PurgeOptions",
    "PurgeResult",
    "RecoveryReport",
    "Refused",
    "Relay",
    "RelayOptions",
    "RelayStats",
    "Reply",
    "Sender",
    "StartSagaSender",
    "TlsFiles",
    "TwoPhase",
    "TwoPhaseOptions",
    "TwoPhaseUnavailable",
    "Verdict",
    "XaState",
    "barrier_table",
    "check_connection",
    "check_two_phase",
    "create_engine",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_transient",
    "json_object",
    "mask",
    "metadata",
    "outbox",
    "outbox_table",
    "purge",
    "purge_two_phase",
    "raw",
    "upgrade",
    "verdict_of",
    "xa_table",
    "xid_for",
]
