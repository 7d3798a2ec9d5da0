"""The gRPC front end and the process wiring."""

from ..rpc._tls import TlsFiles
from ._app import CoordinatorServer
from ._context import Context
from ._dev_etcd import DevEtcd, etcd_binary
from ._operators import Operators
from ._options import Defaults, ServerOptions
from ._servicer import CoordinatorServicer

__all__ = ["Context", "CoordinatorServer", "CoordinatorServicer", "Defaults", "DevEtcd", "Operators",
           "ServerOptions", "TlsFiles", "etcd_binary"]
