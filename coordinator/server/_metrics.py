"""The server's side of metrics: /metrics over HTTP, the count of FAILED transactions, and
an interceptor that counts the coordinator's gRPC calls and times them.

Only methods the server has a handler for are wrapped, so the ``method`` label takes the
registered names and no more (an unknown method is answered UNIMPLEMENTED by grpc, uncounted).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from ..log import LogError, TxLog
from ..telemetry._metrics import Metrics, MetricsEndpoint, PrometheusMetrics, serve

log = logging.getLogger("txcoord.metrics")


class MetricsExport:
    """Serves ``metrics`` on ``listen`` and keeps txc_transactions_failed current: FAILED
    transactions belong to no coordinator, so each one counts them in the log now and then."""

    def __init__(self, metrics: PrometheusMetrics, listen: str, txlog: TxLog,
                 failed_every_s: float) -> None:
        self._metrics, self._listen, self._log = metrics, listen, txlog
        self._every_s = failed_every_s
        self._endpoint: MetricsEndpoint | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._endpoint.port if self._endpoint else 0

    def start(self) -> None:
        self._endpoint = serve(self._metrics, self._listen)
        self._task = asyncio.create_task(self._count_failed(), name="txc-metrics-failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._endpoint is not None:
            await asyncio.to_thread(self._endpoint.close)  # joins the HTTP thread
            self._endpoint = None

    async def _count_failed(self) -> None:
        while True:
            try:
                self._metrics.failed_now(await self._log.count_failed())
            except LogError as exc:  # the gauge keeps its last value; etcd alerts say why
                log.warning("could not count FAILED transactions: %s", exc)
            await asyncio.sleep(self._every_s)


def _code(context: Any, fallback: str) -> str:
    """The status the call ends with: what the handler set (abort sets it), else
    ``fallback`` (OK, CANCELLED, or UNKNOWN for an exception that set none)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return fallback


if TYPE_CHECKING:  # generic in grpc-stubs only
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class MetricsInterceptor(_Interceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(method, handler.unary_unary))  # type: ignore[attr-defined,no-any-return]
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._streamed(method, handler.unary_stream))  # type: ignore[attr-defined,no-any-return]
        return handler  # the coordinator serves no client-streaming methods

    def _unary(self, method: str, behaviour: Any) -> Any:
        async def timed(request: Any, context: Any) -> Any:
            started, ending = time.perf_counter(), "UNKNOWN"
            try:
                reply = await behaviour(request, context)
                ending = "OK"
                return reply
            except asyncio.CancelledError:  # the caller went away (a health Watch ends so)
                ending = "CANCELLED"
                raise
            finally:
                self._metrics.grpc_request(method, _code(context, ending),
                                           time.perf_counter() - started)
        return timed

    def _streamed(self, method: str, behaviour: Any) -> Any:
        if not inspect.isasyncgenfunction(behaviour):
            # A handler that writes with context.write (grpc's health Watch) rather than
            # yielding: timed like a unary one (wrapping it in ``async for`` broke it).
            return self._unary(method, behaviour)

        async def timed(request: Any, context: Any) -> AsyncIterator[Any]:
            started, ending = time.perf_counter(), "UNKNOWN"
            try:
                async for reply in behaviour(request, context):
                    yield reply
                ending = "OK"
            finally:
                self._metrics.grpc_request(method, _code(context, ending),
                                           time.perf_counter() - started)
        return timed
