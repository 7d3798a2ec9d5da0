"""Handler registry: operation name -> business function, per branch op.

Handlers are typed by their payload: the decoder turns the request bytes into the value
the handler receives, and a decoder that raises makes the reply OUTCOME_FAILED
(:class:`PayloadError`) without running the handler.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.participant._local import BusinessFn, PayloadError
from coordinator.participant._types import Op

T = TypeVar("T")


@dataclass(frozen=True)
class BranchContext:
    """What a handler knows about the call besides its payload."""

    gid: str
    branch: str
    operation: str
    op: Op
    attempt: int
    idempotency_key: str
    action_result: bytes = b""
    """Compensate only: the result the action answered OK with (what its handler returned,
    e.g. a reservation id); b"" when the action never answered OK, and on other calls."""


Handler = Callable[[BranchContext, AsyncConnection, T], Awaitable[bytes | None]]
"""``async def handler(ctx, conn, payload) -> bytes | None``: do the business change on
``conn`` (the barrier's transaction; never commit it), return the reply's result bytes.
Raise :class:`Refused` for a business refusal."""

Decoder = Callable[[bytes], T]


def raw(payload: bytes) -> bytes:
    """The default decoder: the payload bytes as they came."""
    return payload


def json_object(payload: bytes) -> dict[str, Any]:
    """Decoder for JSON object payloads (UTF-8)."""
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class _Entry(Generic[T]):
    handler: Handler[T]
    decode: Decoder[T]

    def bind(self, ctx: BranchContext, payload: bytes) -> BusinessFn:
        async def business(conn: AsyncConnection) -> bytes | None:
            try:
                value = self.decode(payload)
            except Exception as exc:
                # The exception text may quote the payload: name its type only.
                raise PayloadError(
                    f"payload for {ctx.operation!r} cannot be decoded ({type(exc).__name__})"
                ) from None
            return await self.handler(ctx, conn, value)

        return business


class Registry:
    """Maps (op, operation name) to a handler; names as the saga's branch spells them."""

    def __init__(self) -> None:
        self._entries: dict[tuple[Op, str], _Entry[Any]] = {}

    def add(self, op: Op, operation: str, handler: Handler[T], decode: Decoder[T]) -> None:
        if not operation:
            raise ValueError("operation name must not be empty")
        if (op, operation) in self._entries:
            raise ValueError(f"a {op} handler for {operation!r} is already registered")
        self._entries[(op, operation)] = _Entry(handler, decode)

    def bind(self, op: Op, ctx: BranchContext, payload: bytes) -> BusinessFn | None:
        entry = self._entries.get((op, ctx.operation))
        return entry.bind(ctx, payload) if entry is not None else None

    def names(self, op: Op) -> list[str]:
        return sorted(name for (kind, name) in self._entries if kind is op)
