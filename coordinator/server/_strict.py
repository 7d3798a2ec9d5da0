"""Register a generated servicer so that undecodable request bytes get INVALID_ARGUMENT.

grpc.aio answers a request its deserializer cannot parse with UNKNOWN and the Python
exception class in the message (``Unexpected <class '...DecodeError'>``): a wrong status
for bad input, and an internal detail. Here the deserializer turns a DecodeError into a
marker, and the handler answers INVALID_ARGUMENT naming the expected message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

_UNDECODABLE = object()


class _Capture:
    """Stands in for a server while a generated ``add_*_to_server`` registers handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, handlers


def add_servicer(server: grpc.aio.Server, add: Callable[[Any, Any], None], servicer: Any) -> None:
    """``add(servicer, server)`` as the generated code does it, with strict decoding."""
    capture = _Capture()
    add(servicer, capture)
    handlers = {name: _strict(h, f"{capture.service}/{name}") for name, h in capture.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(capture.service, handlers),))
    # grpc-stubs does not know this method yet; grpcio has it since 1.63.
    server.add_registered_method_handlers(capture.service, handlers)  # type: ignore[attr-defined]


def _strict(handler: Any, method: str) -> Any:
    parse = handler.request_deserializer
    message = f"request bytes are not a valid request message for {method}"

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return _UNDECODABLE

    async def refuse(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    changes: dict[str, Any] = {"request_deserializer": deserialize}
    if handler.unary_unary is not None:
        behaviour = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            if request is _UNDECODABLE:
                await refuse(context)
            return await behaviour(request, context)
        changes["unary_unary"] = unary_unary
    elif handler.unary_stream is not None:
        streaming = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if request is _UNDECODABLE:
                await refuse(context)
            async for reply in streaming(request, context):
                yield reply
        changes["unary_stream"] = unary_stream
    else:
        kind = "stream_unary" if handler.stream_unary is not None else "stream_stream"
        changes[kind] = _checked_stream(getattr(handler, kind), kind, refuse)
    return handler._replace(**changes)


def _checked_stream(behaviour: Any, kind: str, refuse: Any) -> Any:
    """Stream requests: the behaviour reads an iterator that refuses at a bad message."""
    async def requests(source: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in source:
            if request is _UNDECODABLE:
                await refuse(context)
            yield request

    if kind == "stream_unary":
        async def stream_unary(source: AsyncIterator[Any], context: Any) -> Any:
            return await behaviour(requests(source, context), context)
        return stream_unary

    async def stream_stream(source: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for reply in behaviour(requests(source, context), context):
            yield reply
    return stream_stream
