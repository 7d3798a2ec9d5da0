"""txcoord: a distributed transaction coordinator (sagas and two-phase commit on etcd).

Public API: the client for services that start transactions, the server for embedding a
coordinator, and the generated messages as ``coordinator.pb``. Participants import from
``coordinator.participant``.
"""

from ._client import CoordinatorClient, Retry, Saga, Step
from ._proto.txc.v1 import coordinator_pb2 as pb
from .server import CoordinatorServer, DevEtcd, ServerOptions

__all__ = ["CoordinatorClient", "CoordinatorServer", "DevEtcd", "Retry", "Saga", "ServerOptions",
           "Step", "pb"]
