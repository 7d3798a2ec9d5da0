"""txcoord: a distributed transaction coordinator (sagas and two-phase commit on etcd).

Public API: the client for services that start transactions, the server for embedding a
coordinator, and the generated messages as ``coordinator.pb``. Participants import from
``coordinator.participant``. The server parts load on first use, so a participant service
does not pay for importing them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._client import CoordinatorClient, Retry, Saga, Step
from ._proto.txc.v1 import coordinator_pb2 as pb
from ._tls import TlsFiles

if TYPE_CHECKING:
    from .server import CoordinatorServer, DevEtcd, ServerOptions

_LAZY = {"CoordinatorServer", "DevEtcd", "ServerOptions"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(".server", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CoordinatorClient", "CoordinatorServer", "DevEtcd", "Retry", "Saga", "ServerOptions",
           "Step", "TlsFiles", "pb"]
