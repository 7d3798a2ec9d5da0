"""ParticipantHost: serve txc.v1.Participant from registered handlers, over the barrier.

Every call goes: validate -> find the handler -> barrier (decode + handler inside the
local transaction) under a per-call timeout -> reply. Exceptions become outcomes here
and nowhere else; see docs/participant.md for the table. Prepare/Commit/Abort go to
:class:`TwoPhase` instead of the barrier (a prepared local transaction, by XID), and a
host with prepare handlers runs the in-doubt recovery loop.

The ``Batch`` stream (many calls per message, see ``_batch``) is a transport only: each of
its calls takes the same path as a unary call of its kind, under the same bound on calls
in flight (``max_concurrent_rpcs`` counts both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import grpc
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator._proto.txc.v1 import coordinator_pb2 as pb
from coordinator._proto.txc.v1 import participant_pb2 as ppb
from coordinator.domain.notice import NOTICE_BRANCH
from coordinator.participant import _spans as spans
from coordinator.participant._barrier import Barrier
from coordinator.participant._batch import BatchStream, StreamContext, batch_stream, failed
from coordinator.participant._db.dsn import check_connection
from coordinator.participant._db.errors import describe, is_transient
from coordinator.participant._handlers import BranchContext, Decoder, Handler, Registry, raw
from coordinator.participant._health import DatabaseHealth
from coordinator.participant._local import BarrierOptions, Refused
from coordinator.participant._metrics import OFF, ParticipantMetrics
from coordinator.participant._types import MAX_ID_CHARS, BranchKey, Op, Outcome, Reply
from coordinator.participant.two_phase._branches import InDoubtBranch, TwoPhase, TwoPhaseOptions
from coordinator.participant.two_phase._recovery import (
    CoordinatorDecisions,
    InDoubtResolver,
    RecoveryReport,
)
from coordinator.participant.two_phase._xa import check_two_phase
from coordinator.rpc._shutdown import bounded
from coordinator.rpc._tls import TlsFiles, add_port
from coordinator.telemetry._logging import log_context
from coordinator.telemetry._tracing import bounded_carrier, from_metadata, tracing_for

log = logging.getLogger("coordinator.participant.host")

T = TypeVar("T")
SERVICE = "txc.v1.Participant"
STOP_STEP_S = 5.0  # longest any one stop step may take past its own grace
_METHODS = {
    "Execute": Op.EXECUTE,
    "Compensate": Op.COMPENSATE,
    "Prepare": Op.PREPARE,
    "Commit": Op.COMMIT,
    "Abort": Op.ABORT,
}
_KINDS = {
    ppb.CALL_KIND_EXECUTE: Op.EXECUTE,
    ppb.CALL_KIND_COMPENSATE: Op.COMPENSATE,
    ppb.CALL_KIND_PREPARE: Op.PREPARE,
    ppb.CALL_KIND_COMMIT: Op.COMMIT,
    ppb.CALL_KIND_ABORT: Op.ABORT,
}
_TWO_PHASE = frozenset({Op.PREPARE, Op.COMMIT, Op.ABORT})
_Context = grpc.aio.ServicerContext[ppb.BranchRequest, ppb.BranchReply]
_BUSY = "busy: max_concurrent_rpcs calls in flight here"


@dataclass(frozen=True)
class HostOptions:
    """Options of a :class:`ParticipantHost`."""

    call_timeout_s: float = 10.0
    """Cap of one branch call. A call whose caller stopped waiting still finishes within
    it, so that the caller's retry finds its outcome; past it the call answers RETRY."""

    health_interval_s: float = 5.0
    """How often the database is probed for the gRPC health service."""

    health_timeout_s: float = 2.0
    """A probe slower than this reports NOT_SERVING."""

    shutdown_grace_s: float = 10.0
    """How long :meth:`ParticipantHost.stop` lets calls in flight finish."""

    max_concurrent_rpcs: int | None = None
    """Calls past this many at once, unary and ``Batch`` calls counted together, are refused
    with RESOURCE_EXHAUSTED (the coordinator retries them); set it near the pool size.
    None: no limit."""

    barrier: BarrierOptions = field(default_factory=BarrierOptions)
    """Options of every local transaction (saga barrier and 2PC alike)."""

    two_phase: TwoPhaseOptions = field(default_factory=TwoPhaseOptions)
    """2PC limits and the in-doubt resolver's coordinator."""

    tls: TlsFiles | None = None
    """Serve TLS with this certificate instead of plaintext."""

    tracer_provider: Any = None
    """OpenTelemetry ``TracerProvider`` for the calls' spans; None: the global one, if the
    application set one before creating the host (else no tracing)."""

    metrics: ParticipantMetrics = OFF
    """Where the host, its barrier and its 2PC branches report (calls, duplicates, null
    compensations, hanging refusals, prepared and in-doubt branches); off by default. See
    :class:`PrometheusParticipantMetrics`."""

    def __post_init__(self) -> None:
        if min(self.call_timeout_s, self.health_interval_s, self.health_timeout_s) <= 0:
            raise ValueError("timeouts and intervals must be positive")
        if self.barrier.session_timeout_s <= self.call_timeout_s:
            raise ValueError("barrier.session_timeout_s must exceed call_timeout_s: the database "
                             "would end the sessions of calls still running")


class ParticipantHost:
    """A Python service's side of txcoord transactions.

    >>> host = ParticipantHost(engine)
    >>> @host.execute("accounts.debit", decode=json_object)
    ... async def debit(ctx, conn, body): ...
    """

    def __init__(self, engine: AsyncEngine, options: HostOptions | None = None) -> None:
        self._engine = engine
        self._options = options or HostOptions()
        self._metrics = self._options.metrics
        self._barrier = Barrier(engine, self._options.barrier, metrics=self._metrics)
        self._tracing = tracing_for(self._options.tracer_provider)
        self._two_phase = TwoPhase(engine, self._options.barrier, self._options.two_phase,
                                   metrics=self._metrics)
        self._resolver: InDoubtResolver | None = None
        self._registry = Registry()
        self._health = DatabaseHealth(engine, (SERVICE, ""), self._options)
        self._server: grpc.aio.Server | None = None
        self._outliving: set[asyncio.Task[ppb.BranchReply]] = set()
        self._answering = 0  # calls not answered yet, unary and Batch alike
        self._streams: set[BatchStream] = set()
        self._stopping = False

    # -- registration -----------------------------------------------------------------

    @overload
    def execute(self, operation: str) -> Callable[[Handler[bytes]], Handler[bytes]]: ...
    @overload
    def execute(self, operation: str, *, decode: Decoder[T]) -> Callable[[Handler[T]], Handler[T]]: ...
    def execute(
        self, operation: str, *, decode: Decoder[Any] = raw
    ) -> Callable[[Handler[Any]], Handler[Any]]:
        """Decorator: ``handler`` performs the forward action named ``operation``."""
        return self._decorator(Op.EXECUTE, operation, decode)

    @overload
    def compensate(self, operation: str) -> Callable[[Handler[bytes]], Handler[bytes]]: ...
    @overload
    def compensate(self, operation: str, *, decode: Decoder[T]) -> Callable[[Handler[T]], Handler[T]]: ...
    def compensate(
        self, operation: str, *, decode: Decoder[Any] = raw
    ) -> Callable[[Handler[Any]], Handler[Any]]:
        """Decorator: ``handler`` undoes; ``operation`` is the branch's compensation name."""
        return self._decorator(Op.COMPENSATE, operation, decode)

    @overload
    def prepare(self, operation: str) -> Callable[[Handler[bytes]], Handler[bytes]]: ...
    @overload
    def prepare(self, operation: str, *, decode: Decoder[T]) -> Callable[[Handler[T]], Handler[T]]: ...
    def prepare(
        self, operation: str, *, decode: Decoder[Any] = raw
    ) -> Callable[[Handler[Any]], Handler[Any]]:
        """Decorator: ``handler`` is the business step of 2PC branches whose action is
        ``operation``. It runs inside the local transaction that gets prepared; Commit
        and Abort for the operation then need no handler (the database does them)."""
        return self._decorator(Op.PREPARE, operation, decode)

    def notice(self, operation: str) -> Callable[[NoticeHandler], NoticeHandler]:
        """Decorator: ``handler`` receives the notice of a transaction's settlement named
        ``operation`` (a start's ``Notify(participant, operation)``), as the settled
        ``txc.v1.Transaction``. It runs once per settlement: the coordinator delivers at
        least once, with the key ``{gid}/notify`` (``{gid}/notify/N`` after an operator's
        replay settled it again), and the barrier applies it once, in the handler's local
        transaction. Raising retries it (within the notice's budget); :class:`Refused`
        gives it up. Listed by ``Operations`` as an execute operation."""
        def register(handler: NoticeHandler) -> NoticeHandler:
            self._registry.add(Op.EXECUTE, operation, _notice_only(handler), pb.Transaction.FromString)
            return handler

        return register

    def _decorator(
        self, op: Op, operation: str, decode: Decoder[Any]
    ) -> Callable[[Handler[Any]], Handler[Any]]:
        def register(handler: Handler[Any]) -> Handler[Any]:
            self._registry.add(op, operation, handler, decode)
            return handler

        return register

    # -- calls ------------------------------------------------------------------------

    async def handle(
        self, op: Op, request: ppb.BranchRequest, *, deadline: float | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> ppb.BranchReply:
        """Answer one branch call; transport-free (the gRPC methods, unary and ``Batch``,
        call this). ``trace``: the caller's trace context (``traceparent``, ...), continued
        by this call's span."""
        started = time.perf_counter()
        with (log_context(gid=request.gid[:MAX_ID_CHARS], branch=request.branch[:MAX_ID_CHARS],
                          op=op, attempt=request.attempt),
              spans.call(self._tracing, op, request, trace) as span):
            reply = await self._answer(op, request, deadline)
            spans.answered(span, reply)
        self._metrics.call(op, reply.outcome, time.perf_counter() - started)
        return reply.to_proto()

    async def _answer(self, op: Op, request: ppb.BranchRequest, deadline: float | None) -> Reply:
        try:
            key = BranchKey(request.gid, request.branch, op)
        except ValueError as exc:
            return Reply(Outcome.FAILED, message=f"invalid request: {exc}")
        ctx = BranchContext(
            gid=request.gid,
            branch=request.branch,
            operation=request.operation,
            op=op,
            attempt=request.attempt,
            idempotency_key=request.idempotency_key,
            action_result=request.action_result if op is Op.COMPENSATE else b"",
        )
        business = spans.handler(self._tracing, ctx, self._registry.bind(_registered_as(op), ctx,
                                                                          request.payload))
        if business is None:  # only when called without gRPC, which answers UNIMPLEMENTED
            return Reply(Outcome.FAILED, message=self._unserved(op, request.operation))
        if deadline is not None and deadline <= 0:
            return Reply(Outcome.RETRY, message="the caller's deadline passed before the call started")
        # The caller's deadline does not cut the work short: finished work is recorded, so
        # the caller's retry gets its answer at once, while work cancelled half-way is lost
        # and breaks its database connection, which makes an overloaded service slower still.
        seconds = self._options.call_timeout_s
        try:
            async with asyncio.timeout(seconds):
                if op in _TWO_PHASE:
                    with self._tracing.span("txc.two_phase.local"):
                        return await self._two_phase.call(key, request.operation, business)
                with self._tracing.span("txc.barrier"):
                    return await self._barrier.call(key, business)
        except TimeoutError:
            return Reply(Outcome.RETRY, message=f"{op} {request.operation!r} timed out after {seconds:.3g}s")
        except Exception as exc:
            return _unexpected(ctx, exc)

    def _unserved(self, op: Op, operation: str) -> str:
        """Why ``operation`` cannot be served as ``op`` ("" when it can): a misconfiguration
        (a misspelt name, a handler not registered), never a business refusal."""
        names = self._registry.names(_registered_as(op))
        if operation in names:
            return ""
        return (f"unknown operation {operation[:MAX_ID_CHARS]!r} for {op} "
                f"(this service has: {', '.join(names) or 'none'})")

    def _unserved_call(self, op: Op, request: ppb.BranchRequest) -> str:
        """``_unserved``, logged: the coordinator reads the UNIMPLEMENTED it leads to as a
        misconfigured participant (not retried, shown to operators)."""
        problem = self._unserved(op, request.operation)
        if problem:
            log.warning("%s gid=%s branch=%s: %s", op, request.gid[:MAX_ID_CHARS],
                        request.branch[:MAX_ID_CHARS], problem)
        return problem

    def operations(self) -> ppb.OperationsReply:
        """The names this host serves, per method (the ``Operations`` call's answer)."""
        return ppb.OperationsReply(execute=self._registry.names(Op.EXECUTE),
                                   compensate=self._registry.names(Op.COMPENSATE),
                                   prepare=self._registry.names(Op.PREPARE))

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The txc.v1.Participant methods, to add to a ``grpc.aio`` server of your own."""
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(
                self._behaviour(op),
                request_deserializer=ppb.BranchRequest.FromString,
                response_serializer=ppb.BranchReply.SerializeToString,
            )
            for name, op in _METHODS.items()
        }
        # Raw bytes in: a message that does not parse ends only its own stream, with a
        # status that says so, instead of a deserializer failure inside gRPC.
        handlers["Batch"] = grpc.stream_stream_rpc_method_handler(
            self._batch, response_serializer=ppb.BranchResultBatch.SerializeToString)
        handlers["Operations"] = grpc.unary_unary_rpc_method_handler(
            self._operations, request_deserializer=ppb.OperationsRequest.FromString,
            response_serializer=ppb.OperationsReply.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _behaviour(self, op: Op) -> Callable[[ppb.BranchRequest, _Context], object]:
        async def behaviour(request: ppb.BranchRequest, context: _Context) -> ppb.BranchReply:
            if self._busy():
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _BUSY)
            unserved = self._unserved_call(op, request)
            if unserved:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, unserved)
            self._answering += 1
            try:
                # gRPC cancels this coroutine when the caller's deadline passes; the work
                # runs in a task of its own so that it finishes and its outcome is recorded.
                trace = from_metadata(context.invocation_metadata()) if self._tracing.enabled \
                    else None
                return await asyncio.shield(self._spawn(op, request, context.time_remaining(),
                                                        trace))
            finally:
                self._answering -= 1

        return behaviour

    def _spawn(self, op: Op, request: ppb.BranchRequest, deadline: float | None,
               trace: Mapping[str, str] | None) -> asyncio.Task[ppb.BranchReply]:
        work = asyncio.create_task(self.handle(op, request, deadline=deadline, trace=trace))
        self._outliving.add(work)
        work.add_done_callback(self._outliving.discard)
        return work

    def _busy(self) -> bool:
        limit = self._options.max_concurrent_rpcs
        return limit is not None and self._answering >= limit

    async def _operations(self, request: ppb.OperationsRequest, context: Any) -> ppb.OperationsReply:
        return self.operations()

    async def _batch(self, requests: AsyncIterable[bytes], context: StreamContext) -> None:
        stream = batch_stream(self._answer_call, context)
        self._streams.add(stream)
        if self._stopping:
            stream.close()
        try:
            await stream.run(requests)
        finally:
            self._streams.discard(stream)

    async def _answer_call(self, call: ppb.BranchCall) -> ppb.BranchResult:
        """One call of a Batch stream, answered as its unary method would answer it."""
        op = _KINDS.get(call.kind)
        if op is None or not call.HasField("request"):
            what = "no request" if op is not None else f"unknown kind {call.kind}"
            return failed(call.id, grpc.StatusCode.INVALID_ARGUMENT, f"call {call.id}: {what}")
        if self._stopping:  # what a unary call meets once the server stops
            return failed(call.id, grpc.StatusCode.UNAVAILABLE, "the participant host is stopping")
        if self._busy():
            return failed(call.id, grpc.StatusCode.RESOURCE_EXHAUSTED, _BUSY)
        unserved = self._unserved_call(op, call.request)
        if unserved:
            return failed(call.id, grpc.StatusCode.UNIMPLEMENTED, unserved)
        timeout = call.timeout_ms / 1000 if call.timeout_ms else None
        self._answering += 1
        try:
            # As for a unary call whose caller gives up: answer at the deadline, but let the
            # work finish so that the retry with the same key finds its stored reply.
            async with asyncio.timeout(timeout):
                trace = bounded_carrier(call.metadata) if self._tracing.enabled else None
                reply = await asyncio.shield(self._spawn(op, call.request, timeout, trace))
        except TimeoutError:
            return failed(call.id, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        finally:
            self._answering -= 1
        return ppb.BranchResult(id=call.id, reply=reply)

    # -- serving ----------------------------------------------------------------------

    async def start(self, address: str = "[::]:50051") -> int:
        """Check the database (:class:`DsnError` naming the DSN if unreachable), then serve
        txc.v1.Participant and grpc.health.v1.Health on ``address``; returns the port."""
        if self._server is not None:
            raise RuntimeError("host already started")
        await check_connection(self._engine)
        self._stopping = False
        if self._registry.names(Op.PREPARE):
            await check_two_phase(self._engine)  # TwoPhaseUnavailable says what to fix
        server = grpc.aio.server(maximum_concurrent_rpcs=self._options.max_concurrent_rpcs)
        server.add_generic_rpc_handlers([self.generic_handler()])
        self._health.add_to_server(server)
        port = add_port(server, address, self._options.tls)
        await server.start()
        self._server = server
        await self._health.start()
        self._start_recovery()
        log.info("participant host serving %s on port %d", SERVICE, port)
        return port

    def _start_recovery(self) -> None:
        opts = self._options.two_phase
        if not self._registry.names(Op.PREPARE):
            return
        if opts.coordinator is None:
            log.warning("2PC handlers registered but no coordinator address (HostOptions.two_phase): "
                        "in-doubt branches wait for the coordinator's phase-2 retries")
            if not self._metrics.enabled:
                return
            # Metrics on: the loop still runs, listing without deciding, for the in-doubt gauges.
        round_timeout_s = self._options.barrier.session_timeout_s + 2 * opts.coordinator_timeout_s
        self._resolver = InDoubtResolver(self._two_phase, self._decisions(), opts.recovery_interval_s,
                                         round_timeout_s, metrics=self._metrics)
        self._resolver.start()

    def _decisions(self) -> CoordinatorDecisions | None:
        """Who the in-doubt resolver asks; None without a coordinator address."""
        opts = self._options.two_phase
        if opts.coordinator is None:
            return None
        return CoordinatorDecisions(opts.coordinator, opts.coordinator_timeout_s,
                                    opts.coordinator_tls_ca, opts.coordinator_tls_identity)

    # -- two-phase commit: in-doubt branches ---------------------------------------------

    async def in_doubt(self) -> list[InDoubtBranch]:
        """This database's prepared branches still waiting for phase 2, oldest first
        (``len()`` is the count, ``[0].age`` the oldest age in seconds)."""
        return await self._two_phase.in_doubt()

    async def recover(self) -> RecoveryReport:
        """Run one recovery round now (asks the configured coordinator)."""
        if self._resolver is not None:
            return await self._resolver.run_once()
        resolver = InDoubtResolver(self._two_phase, self._decisions(),
                                   self._options.two_phase.recovery_interval_s, metrics=self._metrics)
        try:
            return await resolver.run_once()
        finally:
            await resolver.stop()

    async def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let calls in flight finish within ``grace_s``
        (default :attr:`HostOptions.shutdown_grace_s`)."""
        server, self._server = self._server, None
        self._stopping = True
        for stream in list(self._streams):  # they end once their calls are answered
            stream.close()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await bounded(resolver.stop(), STOP_STEP_S, "2PC recovery loop")
        await bounded(self._health.shutdown(), STOP_STEP_S, "health")
        grace = self._options.shutdown_grace_s if grace_s is None else grace_s
        if server is not None:
            await bounded(server.stop(grace), grace + STOP_STEP_S, "gRPC server")
        if self._outliving:  # calls whose callers left: let them finish, within the grace
            await asyncio.wait(set(self._outliving), timeout=max(grace, 0.1))
        # Kept MySQL/MariaDB preparing sessions: closed, and waited out, so that whoever
        # finishes their XIDs next (a restarted host, the recovery loop) cannot race them.
        await bounded(self._two_phase.close(), STOP_STEP_S, "2PC kept sessions")

    async def serve(self, address: str = "[::]:50051", stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set or SIGTERM/SIGINT arrives, then stop cleanly."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await self.start(address)
        try:
            await stop.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)


NoticeHandler = Handler[pb.Transaction]
"""``async def handler(ctx, conn, tx: txc.v1.Transaction) -> bytes | None``."""


def _notice_only(handler: NoticeHandler) -> NoticeHandler:
    """A notice operation called as a branch's action is a misplaced name: refused, so
    that the branch's transaction sees a refusal rather than a garbled Transaction."""
    async def called(ctx: BranchContext, conn: AsyncConnection, tx: pb.Transaction) -> bytes | None:
        if not ctx.branch.startswith(NOTICE_BRANCH):
            raise Refused(f"{ctx.operation!r} receives settlement notices, not branch calls")
        return await handler(ctx, conn, tx)

    return called


def _registered_as(op: Op) -> Op:
    """Commit/Abort need no handler of their own, only a prepare handler for the action."""
    return Op.PREPARE if op in _TWO_PHASE else op


def _unexpected(ctx: BranchContext, exc: Exception) -> Reply:
    what = describe(exc)
    if is_transient(exc):
        return Reply(Outcome.RETRY, message=f"transient error: {what}")
    # A bug or an unclassified failure: the transaction was rolled back, so asking the
    # coordinator to retry is safe; a FAILED here would trigger compensation for good.
    where = f"{ctx.op} {ctx.operation!r} gid={ctx.gid} branch={ctx.branch}"
    if isinstance(exc, sa_exc.StatementError):
        # Its text and traceback can carry statement parameters: log the code only.
        log.error("%s failed: %s", where, what,
                  extra={"gid": ctx.gid, "branch": ctx.branch, "op": ctx.op, "attempt": ctx.attempt})
    else:
        log.error("%s failed: %s", where, what, exc_info=exc,
                  extra={"gid": ctx.gid, "branch": ctx.branch, "op": ctx.op, "attempt": ctx.attempt})
    return Reply(Outcome.RETRY, message=f"unexpected error in handler: {what}")
