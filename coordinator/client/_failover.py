"""One gRPC channel over every coordinator a client knows, and how it leaves one in trouble.

Starts are idempotent on the gid and any coordinator answers for any transaction, so a
client needs no favourite: it spreads calls over all of them and stops using one that
cannot serve. All of that is gRPC's own machinery, configured here:

- ``round_robin`` over every address (a list, or a DNS name that resolves to several);
- HTTP/2 keepalive pings with a short ping timeout: a coordinator that stops answering
  (paused, hung, its host gone without a reset) is dropped within about two seconds, and
  calls in flight to it fail with UNAVAILABLE instead of hanging until their deadline;
- client-side health checking on ``txc.v1.Coordinator``: a coordinator that cannot reach
  etcd says NOT_SERVING and gets no new calls until it can;
- a retry policy for the idempotent methods (starts, get, list, watch): an UNAVAILABLE
  is sent again, to the next coordinator, within the call's own deadline.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from ..rpc._channel import RECONNECT_OPTIONS
from ..rpc._tls import TlsFiles

SERVICE = "txc.v1.Coordinator"
IDEMPOTENT_METHODS = ("StartSaga", "StartTwoPhase", "GetTransaction", "ListTransactions",
                      "WatchTransaction")
"""Retried on UNAVAILABLE. Operator actions are not: one that was applied before its reply
was lost must not be applied again behind the operator's back."""


@dataclass(frozen=True, slots=True)
class Failover:
    """How a client spreads over coordinators and leaves one that cannot serve."""

    keepalive_s: float = 1.0
    """Ping interval on every connection; a coordinator must permit it (txc serve does)."""
    ping_timeout_s: float = 1.0
    """A ping unanswered this long drops the connection: calls on it fail over."""
    max_attempts: int = 5
    """Attempts of an idempotent call that meets UNAVAILABLE (gRPC caps it at 5)."""
    initial_backoff_s: float = 0.05
    """Pause before the first re-send; gRPC randomises each pause below the bound."""
    max_backoff_s: float = 0.5
    """Longest pause between re-sends."""
    health_check: bool = True
    """Skip coordinators whose health service says NOT_SERVING (no etcd, shutting down)."""

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError("max_attempts: 2 to 5 (gRPC's retry limit)")
        for name in ("keepalive_s", "ping_timeout_s", "initial_backoff_s", "max_backoff_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0")

    def service_config(self) -> str:
        config: dict[str, object] = {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [{
                "name": [{"service": SERVICE, "method": m} for m in IDEMPOTENT_METHODS],
                "retryPolicy": {
                    "maxAttempts": self.max_attempts,
                    "initialBackoff": f"{self.initial_backoff_s}s",
                    "maxBackoff": f"{self.max_backoff_s}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }],
        }
        if self.health_check:
            config["healthCheckConfig"] = {"serviceName": SERVICE}
        return json.dumps(config)

    def options(self) -> list[tuple[str, str | int]]:
        return [
            *RECONNECT_OPTIONS,
            ("grpc.service_config", self.service_config()),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.ping_timeout_s * 1000)),
            # Without this a ping that is not the keepalive's own (one was in flight when
            # the keepalive came due) waits out the 60 s default before the peer is dropped.
            ("grpc.http2.ping_timeout_ms", int(self.ping_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]


SERVER_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 500),
)
"""What a coordinator's server permits, so clients' keepalive pings (Failover.keepalive_s
>= 0.5 s) are not answered with GOAWAY too_many_pings."""


def split_addresses(addresses: str | Sequence[str]) -> list[str]:
    """``"a:1,b:2"`` or ``["a:1", "b:2"]`` -> ``["a:1", "b:2"]`` (blanks dropped)."""
    parts = [addresses] if isinstance(addresses, str) else list(addresses)
    found = [a.strip() for part in parts for a in part.split(",") if a.strip()]
    if not found:
        raise ValueError("coordinator address: give at least one HOST:PORT")
    return found


def target(addresses: Sequence[str]) -> tuple[str, str | None]:
    """The gRPC target for ``addresses`` and, when several names had to be resolved, the
    first name (what TLS checks the coordinators' certificates against).

    One address is used as it is: ``host:port`` (gRPC resolves the name and balances over
    every address it has) or any gRPC target such as ``dns:///coordinators:7070``. Several
    become one ``ipv4:``/``ipv6:`` list: names are resolved once, here, so a set whose
    members move belongs behind one DNS name instead."""
    if len(addresses) == 1:
        return addresses[0], None
    resolved: list[str] = []
    first_name: str | None = None
    for address in addresses:
        host, port = _host_port(address)
        if _is_ip(host):
            resolved.append(_join(host, port))
            continue
        first_name = first_name or host
        resolved.extend(_join(ip, port) for ip in _resolve(host, port))
    v6 = [a for a in resolved if a.startswith("[")]
    v4 = [a for a in resolved if not a.startswith("[")]
    if v4:
        return "ipv4:" + ",".join(dict.fromkeys(v4)), first_name
    return "ipv6:" + ",".join(dict.fromkeys(v6)), first_name


def coordinator_channel(addresses: str | Sequence[str], tls_ca: bytes | None = None,
                        identity: TlsFiles | None = None,
                        failover: Failover | None = None) -> grpc.aio.Channel:
    """A channel over every coordinator in ``addresses`` (see the module's docstring)."""
    where, tls_name = target(split_addresses(addresses))
    options = (failover or Failover()).options()
    if tls_ca is None:
        if identity is not None:
            raise ValueError("a client certificate needs TLS: give the server's CA too")
        return grpc.aio.insecure_channel(where, options=options)
    if tls_name:
        options.append(("grpc.ssl_target_name_override", tls_name))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls_ca, private_key=identity.private_key if identity else None,
        certificate_chain=identity.cert_chain if identity else None)
    return grpc.aio.secure_channel(where, credentials, options=options)


def _host_port(address: str) -> tuple[str, str]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"coordinator address {address!r}: expected HOST:PORT")
    return host.strip("[]"), port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _join(ip: str, port: str) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _resolve(host: str, port: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"coordinator address {host}:{port}: cannot resolve: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
