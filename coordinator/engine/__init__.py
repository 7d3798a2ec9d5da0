"""Drives transactions: the driver (write-ahead), participant calls, takeover, service core."""

from ._dispatch import Answer, GrpcTransport, Kind, Transport
from ._driver import Driver, EngineOptions
from ._operations import OperationsCheck, ServedOperations
from ._recovery import Recovery
from ._service import CoordinatorCore, ListQuery, StartRequest
from ._stream import BatchTransport

__all__ = [
    "Answer",
    "BatchTransport",

    "CoordinatorCore",
    "Driver",
    "EngineOptions",
    "GrpcTransport",
    "Kind",
    "ListQuery",
    "OperationsCheck",
    "Recovery",
    "ServedOperations",
    "StartRequest",
    "Transport",
]
