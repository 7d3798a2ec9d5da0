"""An OTLP/gRPC trace receiver that counts spans and keeps nothing: where the traced
coordinator of a benchmark exports, so that tracing's cost includes encoding and sending."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tpb_grpc


class SpanSink(tpb_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self._server: grpc.aio.Server | None = None

    async def Export(self, request: tpb.ExportTraceServiceRequest,
                     context: Any) -> tpb.ExportTraceServiceResponse:
        self.spans += sum(len(scope.spans) for rs in request.resource_spans
                          for scope in rs.scope_spans)
        return tpb.ExportTraceServiceResponse()

    async def start(self, port: int) -> None:
        self._server = grpc.aio.server()
        tpb_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"127.0.0.1:{port}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
