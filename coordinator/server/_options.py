"""What a coordinator is started with: :class:`ServerOptions` and the request
:class:`Defaults`. Every field says its unit and what it is for, ``txc serve`` takes its
defaults from here, and the rules between fields are checked here, once, when the options
are built (a ``ValueError`` naming the field)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..domain.validation import Limits
from ..engine import EngineOptions, OperationsCheck
from ..log import EtcdOptions
from ..rpc._plans import DEFAULT_BRANCH_TIMEOUT_S, DEFAULT_SAGA_TIMEOUT_S, DEFAULT_TWO_PHASE_TIMEOUT_S
from ..rpc._tls import TlsFiles
from ..telemetry._metrics import parse_listen
from ._operators import Operators

ParticipantTransport = Literal["batch", "unary"]


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: must be positive, not {value}")


@dataclass(frozen=True, slots=True)
class Defaults:
    """What a start that leaves a timeout at 0 gets, and the longest a ``wait`` may block."""

    saga_timeout_s: float = DEFAULT_SAGA_TIMEOUT_S
    """A saga's forward deadline: past it, it compensates."""

    two_phase_timeout_s: float = DEFAULT_TWO_PHASE_TIMEOUT_S
    """A 2PC's prepare deadline: a branch that has not voted by then is a no."""

    branch_timeout_s: float = DEFAULT_BRANCH_TIMEOUT_S
    """One call to a participant (each attempt)."""

    max_wait_s: float = 300.0
    """Longest a start or get with ``wait=true`` blocks before answering what it has."""

    def __post_init__(self) -> None:
        for name in ("saga_timeout_s", "two_phase_timeout_s", "branch_timeout_s", "max_wait_s"):
            _positive(name, getattr(self, name))


def _node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """One coordinator process. Build it with the fields you change; the rest default."""

    listen: str = "127.0.0.1:7070"
    """HOST:PORT the gRPC service is served on."""

    etcd: EtcdOptions = EtcdOptions()
    """The transaction log: endpoints, key prefix, lease, retention."""

    scan_interval_s: float = 1.0
    """How often the recovery scan looks for transactions nobody drives (takeover)."""

    grace_s: float = 10.0
    """On stop, how long calls in flight may finish before they are cut."""

    allow_participants: tuple[str, ...] = ()
    """Participant addresses the coordinator may call (``host:port``, ``host:*``,
    ``*.domain:port``); empty: any address (development only)."""

    limits: Limits = Limits()
    """Bounds on what one request may ask for, and on transactions driven at once."""

    defaults: Defaults = Defaults()
    """Timeouts a start that names none gets."""

    engine: EngineOptions = EngineOptions()
    """How transactions are driven: calls in flight per participant, retry budgets."""

    operations: OperationsCheck = OperationsCheck()
    """Starts checked against the operations participants list (their optional
    ``Operations`` call): on or off, how long a list is used, the probe's deadline."""

    operators: Operators = field(default_factory=Operators)
    """Who may replay, skip and abort (tokens, client certificates) and with which rights."""

    tls: TlsFiles | None = None
    """Serve TLS with this certificate and key (and require client certificates when it
    names a client CA); None: plaintext."""

    participant_tls_ca: bytes | None = None
    """PEM CAs: call participants over TLS, checked against them; None: plaintext."""

    participant_tls_identity: TlsFiles | None = None
    """The client certificate presented to participants (mutual TLS)."""

    protect_reads: bool = False
    """Get, List and Watch need an operator with the read right (needs ``operators``)."""

    participant_transport: ParticipantTransport = "batch"
    """``batch``: many calls per message on the Participant ``Batch`` stream, unary calls to
    participants without it; ``unary``: one call per request."""

    metrics_listen: str = ""
    """HOST:PORT of the Prometheus ``/metrics`` endpoint; empty: no metrics."""

    failed_count_interval_s: float = 15.0
    """How often the ``txc_transactions_failed`` gauge is recounted from the log."""

    tracer_provider: Any = None
    """An OpenTelemetry TracerProvider for the transactions' traces; None: the global one if
    the application set it, else no tracing (``txc serve`` builds one from OTEL_*)."""

    node_id: str = field(default_factory=_node_id)
    """This coordinator's member id in etcd (host, pid and a random suffix by default)."""

    def __post_init__(self) -> None:
        if not self.listen:
            raise ValueError("listen: a HOST:PORT is needed")
        _positive("scan_interval_s", self.scan_interval_s)
        _positive("failed_count_interval_s", self.failed_count_interval_s)
        if self.grace_s < 0:
            raise ValueError(f"grace_s: must not be negative, not {self.grace_s}")
        if self.participant_transport not in get_args(ParticipantTransport):
            raise ValueError(f"participant_transport: must be 'batch' or 'unary', not "
                             f"{self.participant_transport!r}")
        if self.protect_reads and not self.operators.required:
            raise ValueError("protect_reads: needs operators (tokens or certificates)")
        if self.metrics_listen:
            try:
                parse_listen(self.metrics_listen)
            except ValueError as exc:
                raise ValueError(f"metrics_listen: {exc}") from None
        if not self.node_id:
            raise ValueError("node_id: must not be empty")
