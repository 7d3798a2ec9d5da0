"""gRPC channels as txcoord opens them: quick to come back after the peer restarts.

gRPC's default reconnect backoff grows to 120 s: after a participant or a coordinator
restarts, a channel could fail every call at once (UNAVAILABLE) for up to two minutes
while the peer is long back. Transactions wait on those calls, so the backoff is capped at
a few seconds; the retry schedule of each call is the driver's business anyway.
"""

from __future__ import annotations

import grpc

from ._tls import TlsFiles

RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def insecure_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=RECONNECT_OPTIONS)


def channel(target: str, tls_ca: bytes | None = None,
            identity: TlsFiles | None = None) -> grpc.aio.Channel:
    """A channel to ``target``: TLS, checking the server against ``tls_ca`` (PEM), when
    given, and presenting ``identity`` as the client certificate (mutual TLS) when given
    too; plaintext otherwise."""
    if tls_ca is None:
        if identity is not None:
            raise ValueError("a client certificate needs TLS: give the server's CA too")
        return insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls_ca, private_key=identity.private_key if identity else None,
        certificate_chain=identity.cert_chain if identity else None)
    return grpc.aio.secure_channel(target, credentials, options=RECONNECT_OPTIONS)
