"""Log setup and log context: ``--log-format text|json`` and the fields of a JSON line.

A JSON line is one object: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``
and, when known, ``gid``, ``branch``, ``op``, ``attempt``, ``outcome``, ``trace_id``,
``span_id`` (plus ``exception`` / ``stack`` when the record has them). Nothing else: the
formatter keeps that fixed set, so no ``extra=`` of any library can put a payload or a
result into a line.

The context fields come from, in this order of precedence:

1. ``extra={"gid": ...}`` on the log call itself;
2. :func:`log_context`, a context variable: asyncio tasks copy it when they are created,
   so what is bound where a call's work starts follows that work and nothing else;
3. the current OpenTelemetry span (``trace_id``, ``span_id``), when the optional
   ``opentelemetry-api`` package is installed and a valid span is current.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from types import ModuleType
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CONTEXT_FIELDS = ("gid", "branch", "op", "attempt", "outcome", "trace_id", "span_id")
# Every key a JSON line may have, in the order it is written.
_LINE = ("time", "level", "logger", "message", *CONTEXT_FIELDS, "exception", "stack")
_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger",
            "exc_info": "exception", "stack_info": "stack"}

# Pairs rather than a dict: a context variable's value must never be mutated in place
# (tasks share it), and a tuple cannot be.
_context: ContextVar[tuple[tuple[str, str | int], ...]] = ContextVar("txcoord_log_context", default=())


@contextlib.contextmanager
def log_context(*, gid: str | None = None, branch: str | None = None, op: str | None = None,
                attempt: int | None = None) -> Iterator[None]:
    """Add these fields to every line logged inside the block (and by tasks it starts);
    nested blocks add to, and may override, the outer one's."""
    given = {"gid": gid, "branch": branch, "op": op, "attempt": attempt}
    merged = dict(_context.get()) | {k: v for k, v in given.items() if v not in (None, "")}
    token = _context.set(tuple(merged.items()))
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the log context and the current trace on each record, under what ``extra=``
    already gave. On a handler, so that records of every logger pass through it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (*_context.get(), *_trace_fields()):
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def _trace_fields() -> tuple[tuple[str, str], ...]:
    trace = _opentelemetry_trace()
    if trace is None:
        return ()
    span = trace.get_current_span().get_span_context()
    if not span.is_valid:
        return ()
    return ("trace_id", trace.format_trace_id(span.trace_id)), \
        ("span_id", trace.format_span_id(span.span_id))


@functools.cache
def _opentelemetry_trace() -> ModuleType | None:
    """``opentelemetry.trace``, imported on first use: tracing is an optional extra, and
    a process that never logs JSON should not pay for the import."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


class JsonFormatter(_BaseJsonFormatter):
    """One JSON object per line, of the fixed field set in this module's docstring."""

    def __init__(self) -> None:
        super().__init__(["asctime", "levelname", "name", "message"], rename_fields=_RENAMES)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # The whitelist: any other attribute a record carries is dropped here.
        return {key: log_data[key] for key in _LINE if log_data.get(key) is not None}


def json_log_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing JSON lines to ``stream`` (stderr by default), with the log
    context and trace fields: ``logging.basicConfig(handlers=[json_log_handler()])``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


def setup_logging(level: str, fmt: str = "text") -> None:
    """The root logger of a ``txc`` command: ``fmt`` is one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: choose from {', '.join(FORMATS)}")
    numeric = getattr(logging, level.upper(), logging.INFO)
    if fmt == "json":
        logging.basicConfig(level=numeric, handlers=[json_log_handler()])
    else:
        logging.basicConfig(level=numeric, format=TEXT_FORMAT)
