"""txc.v1.Coordinator over grpc.aio: a thin layer over CoordinatorCore."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TypeVar

import grpc

from .._proto.txc.v1 import coordinator_pb2 as pb
from .._proto.txc.v1 import coordinator_pb2_grpc as pb_grpc
from ..domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    TxcError,
    Unauthenticated,
    Unavailable,
)
from ..domain.records import Protocol, TxState
from ..engine import CoordinatorCore, ListQuery, StartRequest
from ..log import LogError
from ..rpc._multiplex import status_of
from ..rpc._tls import peer_common_name
from ..telemetry._metrics import OFF, Metrics
from ..telemetry._tracing import OFF as TRACING_OFF
from ..telemetry._tracing import SpanHandle, Tracing, from_metadata
from . import _convert as convert
from ._context import Context
from ._operators import ACT, READ, Operators
from ._options import Defaults
from ._starts import Metadata, start_failed, starts_stream

log = logging.getLogger("txcoord.server")
T = TypeVar("T")
SERVICE = pb.DESCRIPTOR.services_by_name["Coordinator"].full_name
STARTS_METHOD = f"/{SERVICE}/Starts"

_STATUS: dict[type[TxcError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


def _failure(exc: TxcError | LogError) -> tuple[grpc.StatusCode, str]:
    """The status a core error ends a call with, and its message: the one mapping every
    handler, the Starts stream's included, uses."""
    if isinstance(exc, TxcError):
        return _STATUS.get(type(exc), grpc.StatusCode.UNKNOWN), str(exc)
    log.warning("log unavailable: %s", exc)
    return grpc.StatusCode.UNAVAILABLE, "transaction log unavailable; retry"


async def _guard(context: Context, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work``; map core errors to status codes so no handler repeats the mapping."""
    try:
        return await work()
    except (TxcError, LogError) as exc:
        await context.abort(*_failure(exc))
    raise AssertionError("unreachable: context.abort raises")


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, core: CoordinatorCore, defaults: Defaults | None = None,
                 operators: Operators | None = None, protect_reads: bool = False,
                 metrics: Metrics = OFF, tracing: Tracing = TRACING_OFF) -> None:
        self._core = core
        self._defaults = defaults or Defaults()
        self._operators = operators or Operators()
        self._protect_reads = protect_reads
        self._metrics = metrics
        self._tracing = tracing

    async def StartSaga(
        self, request: pb.StartSagaRequest, context: Context
    ) -> pb.StartResponse:
        async def work() -> pb.StartResponse:
            return await self._start("StartSaga", self._saga(request), request.wait,
                                     context.invocation_metadata(), self._wait_budget(context))

        return await _guard(context, work)

    def _saga(self, request: pb.StartSagaRequest) -> StartRequest:
        return convert.start_saga(request, self._defaults.saga_timeout_s,
                                  self._defaults.branch_timeout_s)

    def _two_phase(self, request: pb.StartTwoPhaseRequest) -> StartRequest:
        return convert.start_two_phase(request, self._defaults.two_phase_timeout_s,
                                       self._defaults.branch_timeout_s)

    async def _start(self, method: str, start: StartRequest, wait: bool,
                     metadata: Metadata, budget_s: float) -> pb.StartResponse:
        with self._server_span(method, metadata) as span:
            # The transaction's trace is this call's: the spans of its steps, wherever they
            # run, are children of this one.
            start = replace(start, trace=_stored(span))
            try:
                stored, created = await self._core.start(start)
            except Overloaded:
                self._metrics.admission_refused()
                raise
            span.set("txc.gid", stored.record.gid)
            span.set("txc.created", created)
            if wait:
                stored = await self._core.wait_settled(stored.record.gid, budget_s)
            span.set("txc.state", stored.record.state.name)
            return pb.StartResponse(transaction=convert.transaction(stored.record), created=created)

    def _server_span(self, method: str, metadata: Metadata,
                     gid: str = "") -> AbstractContextManager[SpanHandle]:
        """A span for one call of this service: the caller's trace (``traceparent`` in the
        call's metadata) if it sent one, else a new trace."""
        parent = (from_metadata(metadata) or None) if self._tracing.enabled else None
        attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method}
        if gid:
            attributes["txc.gid"] = gid
        return self._tracing.span(f"{SERVICE}/{method}", kind="server", parent=parent,
                                  attributes=attributes)

    async def StartTwoPhase(
        self, request: pb.StartTwoPhaseRequest, context: Context
    ) -> pb.StartResponse:
        async def work() -> pb.StartResponse:
            return await self._start("StartTwoPhase", self._two_phase(request), request.wait,
                                     context.invocation_metadata(), self._wait_budget(context))

        return await _guard(context, work)

    async def Starts(self, requests: AsyncIterator[pb.StartCallBatch],
                     context: Context) -> AsyncIterator[pb.StartResultBatch]:
        """Many starts on one stream; each answered as its unary method would answer it."""
        stream = starts_stream(self._start_call, context)
        await stream.run(requests)
        return
        yield  # an async generator that writes through context.write

    async def _start_call(self, call: pb.StartCall) -> pb.StartResult:
        """One start of the stream; counted in the metrics as a call of ``Starts`` with the
        status its unary method would have ended with."""
        started = time.perf_counter()
        result = await self._start_result(call)
        code = status_of(result.status_code).name if result.status_code else "OK"
        self._metrics.grpc_request(STARTS_METHOD, code, time.perf_counter() - started)
        return result

    async def _start_result(self, call: pb.StartCall) -> pb.StartResult:
        try:
            return pb.StartResult(id=call.id, response=await self._streamed_start(call))
        except (TxcError, LogError) as exc:
            return start_failed(call.id, *_failure(exc))

    async def _streamed_start(self, call: pb.StartCall) -> pb.StartResponse:
        budget = self._budget(call.timeout_ms / 1000 if call.timeout_ms else None)
        metadata = tuple(call.metadata.items())
        which = call.WhichOneof("start")
        if which == "saga":
            return await self._start("StartSaga", self._saga(call.saga), call.saga.wait,
                                     metadata, budget)
        if which == "two_phase":
            return await self._start("StartTwoPhase", self._two_phase(call.two_phase),
                                     call.two_phase.wait, metadata, budget)
        raise InvalidArgument("start", "a StartCall holds saga or two_phase")

    async def GetTransaction(
        self, request: pb.GetTransactionRequest, context: Context
    ) -> pb.Transaction:
        async def work() -> pb.Transaction:
            self._may_read(context)
            if request.include_payloads:
                self._may_read_payloads(context)
            record = (await self._core.get(request.gid)).record
            return convert.transaction(record, payloads=request.include_payloads)

        return await _guard(context, work)

    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: Context
    ) -> pb.ListTransactionsResponse:
        async def work() -> pb.ListTransactionsResponse:
            self._may_read(context)
            query = _list_query(request)
            found, token = await self._core.list(query)
            return pb.ListTransactionsResponse(
                transactions=[convert.transaction(s.record) for s in found], next_page_token=token)

        return await _guard(context, work)

    async def WatchTransaction(
        self, request: pb.GetTransactionRequest, context: Context
    ) -> AsyncIterator[pb.Transaction]:
        try:
            self._may_read(context)
            async for stored in self._core.watch(request.gid):
                yield convert.transaction(stored.record)
        except (TxcError, LogError) as exc:
            await context.abort(*_failure(exc))

    async def ReplayTransaction(self, request: pb.ReplayRequest, context: Context) -> pb.Transaction:
        async def work() -> pb.Transaction:
            actor = self._actor(context)
            with self._server_span("ReplayTransaction", context.invocation_metadata(),
                                   request.gid) as span:
                # The replayed steps join the operator's trace, linked to the original one.
                if self._tracing.enabled:
                    span.link(dict((await self._core.get(request.gid)).record.trace))
                stored = await self._core.replay(request.gid, actor, request.reason,
                                                 _stored(span))
            return convert.transaction(stored.record)

        return await self._operator_action("replay", context, work)

    async def SkipBranch(self, request: pb.SkipBranchRequest, context: Context) -> pb.Transaction:
        async def work() -> pb.Transaction:
            stored = await self._core.skip(request.gid, request.branch, self._actor(context),
                                           request.reason)
            return convert.transaction(stored.record)

        return await self._operator_action("skip", context, work)

    async def AbortTransaction(self, request: pb.AbortRequest, context: Context) -> pb.Transaction:
        async def work() -> pb.Transaction:
            stored = await self._core.abort(request.gid, self._actor(context), request.reason)
            return convert.transaction(stored.record)

        return await self._operator_action("abort", context, work)

    async def PauseTransaction(self, request: pb.PauseRequest, context: Context) -> pb.Transaction:
        async def work() -> pb.Transaction:
            stored = await self._core.pause(request.gid, self._actor(context), request.reason)
            return convert.transaction(stored.record)

        return await self._operator_action("pause", context, work)

    async def ResumeTransaction(self, request: pb.ResumeRequest, context: Context) -> pb.Transaction:
        async def work() -> pb.Transaction:
            stored = await self._core.resume(request.gid, self._actor(context), request.reason)
            return convert.transaction(stored.record)

        return await self._operator_action("resume", context, work)

    async def HoldParticipant(self, request: pb.HoldRequest, context: Context) -> pb.Hold:
        async def work() -> pb.Hold:
            hold = await self._core.hold(request.address, self._actor(context), request.reason,
                                         request.refuse_starts)
            return convert.hold(hold)

        return await self._operator_action("hold", context, work)

    async def ReleaseParticipant(self, request: pb.ReleaseRequest, context: Context) -> pb.Hold:
        async def work() -> pb.Hold:
            return convert.hold(await self._core.release(request.address, self._actor(context),
                                                         request.reason))

        return await self._operator_action("release", context, work)

    async def ListHolds(self, request: pb.ListHoldsRequest, context: Context) -> pb.ListHoldsResponse:
        async def work() -> pb.ListHoldsResponse:
            self._may_read(context)
            return pb.ListHoldsResponse(holds=[convert.hold(h, n)
                                               for h, n in await self._core.list_holds()])

        return await _guard(context, work)

    async def _operator_action(self, action: str, context: Context,
                               work: Callable[[], Awaitable[T]]) -> T:
        """``work`` under ``_guard``, counted as done or refused (state, rights, conflicts)."""
        try:
            done = await _guard(context, work)
        except Exception:
            self._metrics.operator_action(action, "refused")
            raise
        self._metrics.operator_action(action, "done")
        return done

    def _actor(self, context: Context) -> str:
        """Who asked, for the history. With operator tokens configured, the token's name
        (Unauthenticated without a valid one); else the claimed actor, or the peer."""
        claimed = _claimed_actor(context)
        if self._operators.required:
            name = self._operators.identify(context.invocation_metadata() or (),
                                            peer_common_name(context.auth_context()), ACT)
            return f"operator:{name}" + (f" ({claimed})" if claimed else "")
        return f"operator:{claimed or context.peer()}"

    def _may_read(self, context: Context) -> None:
        """With reads protected, only an operator holding the read right may read."""
        if self._protect_reads:
            self._reader(context)

    def _may_read_payloads(self, context: Context) -> None:
        """Payloads are business data: with operators configured, only one holding the read
        right sees them, whether or not reads are protected (open only where everything
        is: no operators at all)."""
        if self._operators.required:
            self._reader(context)

    def _reader(self, context: Context) -> str:
        return self._operators.identify(context.invocation_metadata() or (),
                                        peer_common_name(context.auth_context()), READ)

    def _wait_budget(self, context: Context) -> float:
        return self._budget(context.time_remaining())

    def _budget(self, remaining: float | None) -> float:
        """How long a ``wait=true`` start may wait: up to the cap, and short of the caller's
        deadline by a margin that grows with it (a busy loop must still get the reply out
        in time, or the caller sees DEADLINE_EXCEEDED instead of the transaction)."""
        if remaining is None:
            return self._defaults.max_wait_s
        margin = min(1.0, max(0.2, remaining * 0.1))
        return max(0.0, min(remaining - margin, self._defaults.max_wait_s))


def _stored(span: SpanHandle) -> tuple[tuple[str, str], ...]:
    """``span``'s context as the record keeps it (sorted pairs; empty when untraced)."""
    return tuple(sorted(span.carrier().items()))


def _claimed_actor(context: Context) -> str | None:
    """The caller's ``x-txc-actor`` metadata (the CLI sends user@host): a claim, not proof."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-txc-actor" and isinstance(value, str) and value:
            return value[:128]
    return None


def _list_query(request: pb.ListTransactionsRequest) -> ListQuery:
    try:
        states = frozenset(TxState(s) for s in request.states)
    except ValueError as exc:
        raise InvalidArgument("states", "unknown state") from exc
    try:
        protocol = Protocol(request.protocol) if request.protocol else None
    except ValueError as exc:
        raise InvalidArgument("protocol", "unknown protocol") from exc
    return ListQuery(states=states, protocol=protocol, labels=tuple(sorted(request.labels.items())),
                     page_size=request.page_size, page_token=request.page_token,
                     gid_prefix=request.gid_prefix, participant=request.participant)
