"""The gRPC front end and the process wiring."""

from .._tls import TlsFiles
from ._app import CoordinatorServer, ServerOptions
from ._dev_etcd import DevEtcd
from ._operators import Operators
from ._servicer import CoordinatorServicer, Defaults

__all__ = ["CoordinatorServer", "CoordinatorServicer", "Defaults", "DevEtcd", "Operators",
           "ServerOptions", "TlsFiles"]
