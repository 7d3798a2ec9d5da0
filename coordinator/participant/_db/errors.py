"""Exceptions of the participant SDK and the rule that sorts failures into outcomes.

Messages built here never include statement parameters or payloads: SQLAlchemy's own
``str(exc)`` does, so :func:`describe` renders database errors from their codes instead.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc


class ParticipantError(Exception):
    """Base class of the SDK's own errors."""


class DsnError(ParticipantError):
    """A DSN that cannot be parsed, names an unsupported driver, or cannot connect."""


class PermanentDeliveryError(ParticipantError):
    """A relay sender's verdict that a message can never be delivered as it is."""


# SQLSTATE classes/codes that mean "try again": serialization failure, deadlock,
# lock not available, query canceled (statement timeout), too many connections,
# connection exceptions (08xxx), operator intervention / shutdown (57P0x).
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57014", "53300", "57P01", "57P02", "57P03"}
_PG_TRANSIENT_CLASSES = ("08",)

# MySQL/MariaDB error numbers: deadlock, lock wait timeout, too many connections,
# server shutdown, can't connect, gone away, lost connection, connection killed,
# client disconnected for inactivity (MySQL 8.0.24+), query interrupted.
_MYSQL_TRANSIENT = {1213, 1205, 1040, 1053, 2002, 2003, 2006, 2013, 2055, 1927, 4031, 1317}


def _sqlstate(orig: BaseException) -> str | None:
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def _mysql_errno(orig: BaseException) -> int | None:
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_transient(exc: BaseException) -> bool:
    """True when the failure is worth retrying: the database (or the link to it) hiccuped."""
    if isinstance(exc, OSError):  # refused/reset connections and TimeoutError alike
        return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # pool exhausted / connection dropped before use
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if orig is None:
            return False
        errno = _mysql_errno(orig)
        if errno is not None:
            return errno in _MYSQL_TRANSIENT
        state = _sqlstate(orig)
        if state is not None:
            return state in _PG_TRANSIENT or state.startswith(_PG_TRANSIENT_CLASSES)
        return isinstance(orig.__cause__, OSError)
    return False


def is_lock_timeout(exc: BaseException) -> bool:
    """True when a statement gave up waiting for a row lock (lock_timeout, 55P03 on
    PostgreSQL; innodb_lock_wait_timeout, 1205 on MySQL/MariaDB)."""
    if not isinstance(exc, sa_exc.DBAPIError) or exc.orig is None:
        return False
    errno = _mysql_errno(exc.orig)
    return errno == 1205 if errno is not None else _sqlstate(exc.orig) == "55P03"


def describe(exc: BaseException) -> str:
    """A short, payload-free description of a failure for replies and logs.

    Only transient database errors keep the driver's first line ("deadlock detected",
    "Lock wait timeout exceeded"): other messages can quote row values (MySQL's
    "Duplicate entry '...'"), so they are reduced to their class and code.
    """
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
        errno = _mysql_errno(orig)
        code = f"error {errno}" if errno is not None else f"SQLSTATE {_sqlstate(orig)}"
        head = f"{type(orig).__name__} ({code})"
        if not is_transient(exc):
            return head
        text = str(orig.args[1]) if errno is not None and len(orig.args) > 1 else str(orig)
        return f"{head}: {text.splitlines()[0]}" if text else head
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError | ParticipantError) and str(exc):
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return type(exc).__name__
