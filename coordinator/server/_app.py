"""Wiring: log + transport + driver + recovery + gRPC server, and their orderly shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from .._proto.txc.v1 import coordinator_pb2_grpc as pb_grpc
from ..client._failover import SERVER_KEEPALIVE_OPTIONS
from ..domain.addresses import AllowList
from ..engine import (
    BatchTransport,
    CoordinatorCore,
    Driver,
    GrpcTransport,
    Recovery,
    ServedOperations,
    Transport,
)
from ..log import EtcdLog, TxLog
from ..rpc._shutdown import bounded
from ..rpc._tls import add_port
from ..telemetry._metrics import OFF, Metrics, PrometheusMetrics
from ..telemetry._tracing import tracing_for
from ._metrics import MetricsExport, MetricsInterceptor
from ._options import ServerOptions
from ._servicer import SERVICE, CoordinatorServicer
from ._strict import add_servicer

log = logging.getLogger("txcoord.server")
STEP_S = 5.0  # longest any one shutdown step may take past its own grace
HEALTH_EVERY_S = 0.25  # how often the log's reachability is turned into health status


def _transport(options: ServerOptions) -> Transport:
    ca, identity = options.participant_tls_ca, options.participant_tls_identity
    if options.participant_transport == "unary":
        return GrpcTransport(tls_ca=ca, tls_identity=identity)
    return BatchTransport(tls_ca=ca, tls_identity=identity)


class CoordinatorServer:
    """One coordinator process' worth of parts. ``start`` then ``stop``; or ``serve``."""

    def __init__(self, options: ServerOptions, txlog: TxLog | None = None,
                 transport: Transport | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        """``registry``: where metrics go when ``options.metrics_listen`` is set (a fresh
        one if not given: prometheus_client's global registry is left alone)."""
        self.options = options
        self.metrics: Metrics = OFF
        if options.metrics_listen:
            self.metrics = PrometheusMetrics(registry or CollectorRegistry())
        self.tracing = tracing_for(options.tracer_provider)
        self.log = txlog or EtcdLog(options.etcd, options.node_id, self.metrics)
        self.transport = transport or _transport(options)
        self.driver = Driver(self.log, self.transport, options.engine, limits=options.limits,
                             metrics=self.metrics, tracing=self.tracing)
        self.core = CoordinatorCore(self.log, self.driver, options.limits,
                                    AllowList(options.allow_participants), self._served())
        self.recovery = Recovery(self.log, self.driver, options.scan_interval_s,
                                 metrics=self.metrics)
        self._export: MetricsExport | None = None
        if isinstance(self.metrics, PrometheusMetrics):
            self._export = MetricsExport(self.metrics, options.metrics_listen, self.log,
                                         options.failed_count_interval_s)
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._server: grpc.aio.Server | None = None
        self._health_task: asyncio.Task[None] | None = None
        self.port = 0

    def _served(self) -> ServedOperations | None:
        """The check of starts against participants' operation lists, asked over the
        transport's own channels (same TLS); none for a transport that cannot ask."""
        transport = self.transport
        if not self.options.operations.enabled or not isinstance(
                transport, GrpcTransport | BatchTransport):
            return None
        return ServedOperations(transport.operations, self.options.operations)

    @property
    def metrics_port(self) -> int:
        """The port /metrics is served on (0: metrics off, or not started)."""
        return self._export.port if self._export else 0

    async def start(self) -> None:
        await self.log.open()
        max_message = self.options.limits.max_total_payload_bytes + 1024 * 1024
        # No interceptor without metrics: each one costs every call a little.
        interceptors = [MetricsInterceptor(self.metrics)] if self._export else []
        server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            *SERVER_KEEPALIVE_OPTIONS,
        ])
        add_servicer(server, pb_grpc.add_CoordinatorServicer_to_server,
                     CoordinatorServicer(self.core, self.options.defaults, self.options.operators,
                                         self.options.protect_reads, self.metrics, self.tracing))

        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        self.port = add_port(server, self.options.listen, self.options.tls)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {self.options.listen}")
        if self._export is not None:  # first: a taken metrics port stops the start here
            self._export.start()
        await server.start()
        self._server = server
        # The holds first: a transaction taken over must not call a held participant.
        await self.driver.holds.refresh()
        self.driver.holds.start()
        self.recovery.start()
        for name in ("", SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._health_task = asyncio.create_task(self._report_health(), name="txc-health")
        log.info("coordinator %s listening on %s (port %d, %s)", self.options.node_id,
                 self.options.listen, self.port, "TLS" if self.options.tls else "plaintext")
        self._warn_exposure()

    async def _report_health(self) -> None:
        """``txc.v1.Coordinator`` is NOT_SERVING while the log is out of reach: clients'
        health checks then send their calls to the other coordinators (nothing can be
        started or decided here meanwhile; the process itself stays up and comes back)."""
        serving = True
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            reachable = self.log.reachable()
            if reachable == serving:
                continue
            serving = reachable
            log.warning("transaction log %s: %s", "reachable again" if serving else "out of reach",
                        "serving" if serving else "NOT_SERVING until it is back")
            await self._health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING if serving
                                   else health_pb2.HealthCheckResponse.NOT_SERVING)

    def _warn_exposure(self) -> None:
        opts = self.options
        remote = not opts.listen.startswith(("127.", "localhost", "[::1]"))
        if opts.operators.required:
            log.info("operator actions need a token (%d operators)", len(opts.operators.tokens))
            if remote and opts.tls is None:
                log.warning("operator tokens reach %s in clear: serve TLS (--tls-cert, "
                            "--tls-key) or put a TLS proxy in front", opts.listen)
        elif remote:
            log.warning("operator actions (replay, skip, abort) are open to anyone who reaches "
                        "%s: pass --operator-tokens FILE", opts.listen)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking work, let attempts in flight finish, then hand everything over."""
        grace = self.options.grace_s if grace_s is None else grace_s
        self.core.accepting = False
        if self._health_task is not None:
            self._health_task.cancel()
        await bounded(self._health.enter_graceful_shutdown(), STEP_S, "health NOT_SERVING")
        await bounded(self.recovery.stop(), STEP_S, "takeover scan")
        await bounded(self.driver.holds.stop(), STEP_S, "participant holds")
        await self.driver.stop(grace)
        if self._server is not None:
            await bounded(self._server.stop(min(grace, 1.0)), min(grace, 1.0) + STEP_S,
                          "gRPC server")
        # revoking the lease lets others claim at once
        await bounded(self.log.close(release=True), STEP_S, "log (lease revoke)")
        await bounded(self.transport.close(), STEP_S, "participant channels")
        if self._export is not None:  # last: a scrape during shutdown still answers
            await bounded(self._export.stop(), STEP_S, "metrics endpoint")
        log.info("coordinator %s stopped", self.options.node_id)

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received: shutting down")
        await self.stop()
