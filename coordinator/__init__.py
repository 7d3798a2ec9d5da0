"""txcoord: a distributed transaction coordinator (sagas and two-phase commit on etcd).

Public API: the client for services that start transactions (``CoordinatorClient``, with
``Saga``, ``TwoPhase``, ``Step``, ``Retry`` and ``Notify`` to describe them, ``WaitTimedOut`` when a
wait runs out), a client for calling one
participant directly (``ParticipantClient``), the server for embedding a coordinator
(``CoordinatorServer``, ``ServerOptions``, ``DevEtcd``), ``TlsFiles`` for a certificate and
its key, ``tracer_provider_from_env`` for traces, and the generated messages as
``coordinator.pb`` (Coordinator service) and ``coordinator.ppb`` (Participant service;
``coordinator.ppb_grpc`` holds its servicer base class for a participant written without
the SDK).

Participants import from ``coordinator.participant``. The server parts load on first use,
so a participant service does not pay for importing them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._proto.txc.v1 import coordinator_pb2 as pb
from ._proto.txc.v1 import participant_pb2 as ppb
from ._proto.txc.v1 import participant_pb2_grpc as ppb_grpc
from .client._coordinator import (
    SETTLED_STATES,
    TERMINAL_STATES,
    CoordinatorClient,
    ListFilter,
    Notify,
    Retry,
    Saga,
    Step,
    TwoPhase,
    WaitTimedOut,
    settled,
)
from .client._failover import Failover
from .client._participant import ParticipantClient
from .rpc._tls import TlsFiles
from .telemetry._tracing_env import TracingConfigError, tracer_provider_from_env

if TYPE_CHECKING:
    from .server import CoordinatorServer, DevEtcd, ServerOptions

_LAZY = {"CoordinatorServer", "DevEtcd", "ServerOptions"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(".server", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SETTLED_STATES",
    "TERMINAL_STATES",
    "CoordinatorClient",
    "CoordinatorServer",
    "DevEtcd",
    "Failover",
    "ListFilter",
    "Notify",
    "ParticipantClient",
    "Retry",
    "Saga",
    "ServerOptions",
    "Step",
    "TlsFiles",
    "TracingConfigError",
    "TwoPhase",
    "WaitTimedOut",
    "pb",
    "ppb",
    "ppb_grpc",
    "settled",
    "tracer_provider_from_env",
]
