"""txcoord participant SDK: exactly-once branch calls for Python services.

* :class:`ParticipantHost` serves txc.v1.Participant from handlers registered per
  operation name (``@host.execute("accounts.debit")``, ``@host.compensate(...)``).
* :class:`Barrier` runs a business function in a local transaction together with its
  barrier row: duplicates, null compensations, hanging requests and concurrent twins
  are handled there.
* ``outbox.add(conn, ...)`` / ``outbox.add_start_saga(conn, saga)`` write messages in
  the service's own transaction; :class:`Relay` delivers them (:class:`StartSagaSender`).
* ``@host.prepare("accounts.debit")`` registers a two-phase-commit branch: the handler
  runs inside a local transaction that is prepared (XA on MySQL/MariaDB, PREPARE
  TRANSACTION on PostgreSQL) and later committed or rolled back; :class:`TwoPhase` does
  it without the host. In-doubt branches are finished by a recovery loop that asks the
  coordinator (``HostOptions(two_phase=TwoPhaseOptions(coordinator="host:port"))``).
* :func:`purge` keeps the tables small; :func:`upgrade` (or ``txc migrate``) creates them.
* :func:`json_log_handler` writes JSON log lines; while a call runs, the host puts its gid,
  branch, op and attempt on every line (the SDK configures no logging itself).
* ``HostOptions(metrics=m)`` and ``RelayOptions(metrics=m)`` with
  ``m = PrometheusParticipantMetrics(registry)`` export the SDK's Prometheus metrics
  (calls, barrier findings, outbox backlog and lag, prepared and in-doubt 2PC branches).

The package is cut by concept: ``two_phase/`` (2PC branches and their in-doubt
resolver), ``outbox/`` (the message table, relay and senders), ``_db/`` (database
plumbing: DSNs, dialect differences, the session guard, tables, migrations, errors);
barrier, host, handlers, health and retention sit at the top. Import from here: the
sub-packages' private modules may move.

See docs/participant.md.
"""

from coordinator.participant import outbox
from coordinator.participant._barrier import Barrier
from coordinator.participant._db.dsn import create_engine
from coordinator.participant._db.errors import (
    DsnError,
    ParticipantError,
    PermanentDeliveryError,
)
from coordinator.participant._db.migrations import MigrationError, upgrade
from coordinator.participant._handlers import BranchContext, Decoder, Handler, json_object
from coordinator.participant._host import HostOptions, ParticipantHost
from coordinator.participant._local import BarrierOptions, BusinessFn, Refused
from coordinator.participant._metrics import ParticipantMetrics, PrometheusParticipantMetrics
from coordinator.participant._retention import PurgeOptions, PurgeResult, purge
from coordinator.participant._types import BranchKey, Op, Outcome, Reply
from coordinator.participant.outbox import (
    OutboxBacklog,
    OutboxError,
    OutboxMessage,
    Relay,
    RelayOptions,
    RelayStats,
    Sender,
    StartSagaSender,
)
from coordinator.participant.two_phase import (
    Decision,
    InDoubtBranch,
    RecoveryReport,
    TwoPhase,
    TwoPhaseOptions,
    TwoPhaseUnavailable,
    check_two_phase,
    purge_two_phase,
)
from coordinator.rpc._tls import TlsFiles
from coordinator.telemetry._logging import json_log_handler

__all__ = [
    "Barrier",
    "BarrierOptions",
    "BranchContext",
    "BranchKey",
    "BusinessFn",
    "Decision",
    "Decoder",
    "DsnError",
    "Handler",
    "HostOptions",
    "InDoubtBranch",
    "MigrationError",
    "Op",
    "OutboxBacklog",
    "OutboxError",
    "OutboxMessage",
    "Outcome",
    "ParticipantError",
    "ParticipantHost",
    "ParticipantMetrics",
    "PermanentDeliveryError",
    "PrometheusParticipantMetrics",
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
    "check_two_phase",
    "create_engine",
    "json_log_handler",
    "json_object",
    "outbox",
    "purge",
    "purge_two_phase",
    "upgrade",
]
