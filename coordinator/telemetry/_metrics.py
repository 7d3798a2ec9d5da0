"""Prometheus metrics of a coordinator: one object the engine, the log and the server call.

``Metrics`` itself does nothing, so that the parts that call it need no "are metrics on?"
test and cost a method call when they are off. ``PrometheusMetrics`` records into the
registry it is given (never prometheus_client's global one: two coordinators in one process,
as in the tests, each have their own). Label values are bounded sets (protocols, states,
ops, outcomes, etcd request kinds, gRPC methods and codes); the participant address is no
label, since nothing bounds the addresses a caller may name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..domain.records import Protocol, TxState

log = logging.getLogger("txcoord.metrics")

# Buckets in seconds. Transactions run from milliseconds (no-op branches) to an hour
# (retried compensations); calls and etcd requests are short unless something is wrong.
TX_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ETCD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
GRPC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def protocol_label(protocol: Protocol) -> str:
    return "two_phase" if protocol is Protocol.TWO_PHASE else "saga"


class Metrics:
    """The hooks; every one a no-op here (metrics off)."""

    def tx_started(self, protocol: Protocol) -> None:
        """A transaction was created by this coordinator."""

    def tx_driven(self, protocol: Protocol, delta: int) -> None:
        """This coordinator began (+1) or stopped (-1) driving a transaction."""

    def tx_finished(self, protocol: Protocol, state: TxState, seconds: float) -> None:
        """A transaction settled here: terminal, or FAILED (waiting for an operator)."""

    def branch_call(self, op: str, outcome: str, seconds: float) -> None:
        """One attempt of a participant call and its outcome (ok, failed, unknown, ...)."""

    def etcd_request(self, kind: str, outcome: str, seconds: float) -> None:
        """One request to etcd (kind: create, write, get, claim, scan, ...)."""

    def takeovers(self, count: int) -> None:
        """Orphans (transactions of a departed coordinator) claimed by this one."""

    def admission_refused(self) -> None:
        """A start refused at capacity (max_active)."""

    def operator_action(self, action: str, outcome: str) -> None:
        """replay, skip or abort, and whether it was done."""

    def failed_now(self, count: int) -> None:
        """Transactions FAILED in the log (all coordinators'), as last counted."""

    def grpc_request(self, method: str, code: str, seconds: float) -> None:
        """One call of the coordinator's gRPC API, by method and status code."""

    def holds_now(self, held: int, waiting: int) -> None:
        """Participant addresses held (cluster-wide), and transactions this coordinator has
        waiting on a hold."""

    def notice(self, event: str) -> None:
        """A settlement's notice: "sent" (delivery begun here), "acknowledged", "given_up"."""


OFF = Metrics()


class PrometheusMetrics(Metrics):
    """Records into ``registry``; ``serve`` exposes it over HTTP."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self._started = Counter("txc_transactions_started", "Transactions created by this "
                                "coordinator", ["protocol"], registry=r)
        self._finished = Counter("txc_transactions_finished", "Transactions settled by this "
                                 "coordinator (FAILED included)", ["protocol", "state"], registry=r)
        self._duration = Histogram("txc_transaction_duration_seconds", "From creation to "
                                   "settling", ["protocol", "state"], buckets=TX_BUCKETS, registry=r)
        self._in_flight = Gauge("txc_transactions_in_flight", "Transactions this coordinator "
                                "drives now", ["protocol"], registry=r)
        self._held = Gauge("txc_participants_held", "Participant addresses held by an operator "
                           "(every coordinator's view of the cluster-wide holds)", registry=r)
        self._waiting = Gauge("txc_transactions_waiting_on_holds", "Transactions this "
                              "coordinator has waiting on a held participant", registry=r)
        self._failed = Gauge("txc_transactions_failed", "FAILED transactions in the log (every "
                             "coordinator's), waiting for an operator", registry=r)
        self._calls = Counter("txc_branch_calls", "Participant call attempts", ["op", "outcome"],
                              registry=r)
        self._call_seconds = Histogram("txc_branch_call_duration_seconds", "Participant call "
                                       "attempts", ["op"], buckets=CALL_BUCKETS, registry=r)
        self._etcd = Counter("txc_etcd_requests", "Requests to etcd", ["kind", "outcome"],
                             registry=r)
        self._etcd_seconds = Histogram("txc_etcd_request_duration_seconds", "Requests to etcd",
                                       ["kind"], buckets=ETCD_BUCKETS, registry=r)
        self._takeovers = Counter("txc_takeovers", "Orphaned transactions claimed", registry=r)
        self._refused = Counter("txc_admission_refused", "Starts refused at max_active",
                                registry=r)
        self._operator = Counter("txc_operator_actions", "Operator actions", ["action", "outcome"],
                                 registry=r)
        self._grpc = Counter("txc_grpc_server_requests", "Coordinator API calls",
                             ["method", "code"], registry=r)
        self._grpc_seconds = Histogram("txc_grpc_server_handling_seconds", "Coordinator API "
                                       "calls, to the last reply", ["method"],
                                       buckets=GRPC_BUCKETS, registry=r)
        self._notices = Counter("txc_notices", "Settlement notices: delivery begun here (sent), "
                                "acknowledged, given up", ["event"], registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(...)``, cached: labels() takes a lock and builds a tuple each time,
        and the label sets here are few and fixed."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def tx_started(self, protocol: Protocol) -> None:
        self._child(self._started, protocol_label(protocol)).inc()

    def tx_driven(self, protocol: Protocol, delta: int) -> None:
        self._child(self._in_flight, protocol_label(protocol)).inc(delta)

    def tx_finished(self, protocol: Protocol, state: TxState, seconds: float) -> None:
        labels = (protocol_label(protocol), state.name)
        self._child(self._finished, *labels).inc()
        self._child(self._duration, *labels).observe(max(0.0, seconds))

    def branch_call(self, op: str, outcome: str, seconds: float) -> None:
        self._child(self._calls, op, outcome).inc()
        self._child(self._call_seconds, op).observe(seconds)

    def etcd_request(self, kind: str, outcome: str, seconds: float) -> None:
        self._child(self._etcd, kind, outcome).inc()
        self._child(self._etcd_seconds, kind).observe(seconds)

    def takeovers(self, count: int) -> None:
        self._takeovers.inc(count)

    def admission_refused(self) -> None:
        self._refused.inc()

    def operator_action(self, action: str, outcome: str) -> None:
        self._child(self._operator, action, outcome).inc()

    def failed_now(self, count: int) -> None:
        self._failed.set(count)

    def holds_now(self, held: int, waiting: int) -> None:
        self._held.set(held)
        self._waiting.set(waiting)

    def grpc_request(self, method: str, code: str, seconds: float) -> None:
        self._child(self._grpc, method, code).inc()
        self._child(self._grpc_seconds, method).observe(seconds)

    def notice(self, event: str) -> None:
        self._child(self._notices, event).inc()


@dataclass
class MetricsEndpoint:
    """The HTTP server of /metrics (a thread of prometheus_client's); ``close`` stops it."""

    port: int
    close: Callable[[], None]


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::]:9100`` for IPv6) as (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{listen!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(metrics: PrometheusMetrics, listen: str) -> MetricsEndpoint:
    """Serve /metrics on ``listen`` (port 0: any free one) until closed."""
    host, port = parse_listen(listen)
    server, thread = start_http_server(port, host, registry=metrics.registry)

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    bound = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return MetricsEndpoint(int(bound), close)
