"""TLS for txcoord's gRPC servers (coordinator and participant host) and their clients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A certificate chain and its private key, PEM: a server's, or a client's identity.

    ``client_ca`` (servers only): PEM CAs that client certificates must chain to; when
    set, the server refuses callers without a valid one (mutual TLS).
    """

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def read(cls, cert: str | Path, key: str | Path, client_ca: str | Path | None = None) -> TlsFiles:
        return cls(Path(cert).read_bytes(), Path(key).read_bytes(),
                   Path(client_ca).read_bytes() if client_ca else None)


def add_port(server: grpc.aio.Server, address: str, tls: TlsFiles | None) -> int:
    """Listen on ``address``: TLS only when ``tls`` is given (mutual with its client_ca),
    plaintext otherwise."""
    if tls is None:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(tls.private_key, tls.cert_chain)], root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None)
    return server.add_secure_port(address, credentials)


def peer_common_name(auth_context: Mapping[str, Iterable[bytes]] | None) -> str | None:
    """The common name of the verified client certificate of a call (mutual TLS only)."""
    for value in (auth_context or {}).get("x509_common_name", ()):
        return value.decode(errors="replace")
    return None
