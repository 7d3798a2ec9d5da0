"""TLS for txcoord's gRPC servers (coordinator and participant host) and their clients."""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A server's certificate chain and private key, PEM."""

    cert_chain: bytes
    private_key: bytes

    @classmethod
    def read(cls, cert: str, key: str) -> TlsFiles:
        with open(cert, "rb") as c, open(key, "rb") as k:
            return cls(c.read(), k.read())


def add_port(server: grpc.aio.Server, address: str, tls: TlsFiles | None) -> int:
    """Listen on ``address``: TLS only when ``tls`` is given, plaintext otherwise."""
    if tls is None:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials([(tls.private_key, tls.cert_chain)])
    return server.add_secure_port(address, credentials)
