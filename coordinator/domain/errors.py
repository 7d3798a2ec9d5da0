"""Errors of the service core. The transport maps each to one gRPC status code."""

from __future__ import annotations


class TxcError(Exception):
    """Base of the errors a caller can act on."""


class InvalidArgument(TxcError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class AlreadyExists(TxcError):
    pass


class NotFound(TxcError):
    pass


class FailedPrecondition(TxcError):
    pass


class Unavailable(TxcError):
    pass


class Overloaded(TxcError):
    """Too much work in progress here: nothing was written; retry later or elsewhere."""


class Unauthenticated(TxcError):
    """The caller did not prove who it is, and this action needs to know."""


class PermissionDenied(TxcError):
    """The caller is known, and may not do this."""
