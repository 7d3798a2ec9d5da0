"""Network helpers shared by the dev etcd, the chaos harness, the benchmarks and the tests."""

from __future__ import annotations

import socket

from ._tls import add_port  # listen on a gRPC server: plaintext, TLS or mutual TLS


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS picks it). Another process
    may take it before the caller binds it: fine for tests and local clusters."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = ["add_port", "free_port"]
