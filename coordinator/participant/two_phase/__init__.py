"""Two-phase commit branches on the service's own database.

:class:`TwoPhase` answers Prepare / Commit / Abort with a prepared local transaction per
branch (XA on MySQL/MariaDB, PREPARE TRANSACTION on PostgreSQL), named by
:func:`xid_for`; the in-doubt resolver finishes prepared branches by asking the
coordinator; :func:`purge_two_phase` deletes finished rows of ``txc_xa``.
"""

from coordinator.participant.two_phase._branches import InDoubtBranch, TwoPhase, TwoPhaseOptions
from coordinator.participant.two_phase._recovery import RecoveryReport
from coordinator.participant.two_phase._retention import purge_two_phase
from coordinator.participant.two_phase._sessions import Decision
from coordinator.participant.two_phase._xa import TwoPhaseUnavailable, check_two_phase
from coordinator.participant.two_phase._xid import xid_for

__all__ = [
    "Decision",
    "InDoubtBranch",
    "RecoveryReport",
    "TwoPhase",
    "TwoPhaseOptions",
    "TwoPhaseUnavailable",
    "check_two_phase",
    "purge_two_phase",
    "xid_for",
]
