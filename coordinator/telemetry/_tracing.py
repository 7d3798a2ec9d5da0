"""OpenTelemetry tracing, optional: one trace per transaction, across every process it touches.

txcoord runs without opentelemetry (``pip install "txcoord[otel]"`` adds it). Code that
traces holds a :class:`Tracing`; the base class is off, and its spans are one shared no-op
object, so that a coordinator without tracing pays a method call per span and imports
nothing. :func:`tracing_for` gives the real one for a tracer provider.

Context travels as a *carrier*: the ``traceparent`` (and ``tracestate``, ``baggage``) that
the configured propagator writes, W3C Trace Context by default. It rides in gRPC metadata
on unary calls, in ``BranchCall.metadata`` on the ``Batch`` stream, and in the transaction
record between the coordinators that drive a transaction, so that one which takes over
continues the same trace. A stored carrier is bounded (:data:`MAX_CARRIER_BYTES`): callers
choose what ``tracestate`` and ``baggage`` hold, and the record must not grow with it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, StatusCode
except ImportError:  # the otel extra is not installed: tracing stays off
    trace = None  # type: ignore[assignment]

Carrier = Mapping[str, str]
Kind = Literal["internal", "server", "client"]
AttributeValue = str | int | float | bool
MAX_CARRIER_BYTES = 1024
TRACEPARENT = "traceparent"


class SpanHandle:
    """What code inside a span may do with it. This one does nothing (tracing off)."""

    def set(self, key: str, value: AttributeValue) -> None:
        """Set an attribute."""

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """Record something that happened inside the span (a retry, a lost write)."""

    def fail(self, message: str) -> None:
        """Mark the span as failed (status ERROR) with a description."""

    def link(self, carrier: Carrier) -> None:
        """Link this span to the one ``carrier`` names (a replay to the original trace)."""

    def carrier(self) -> dict[str, str]:
        """This span's context, to pass on to the next process (empty when off)."""
        return {}


_NOOP = SpanHandle()


class Tracing:
    """Tracing off: every span is the shared no-op handle."""

    enabled = False

    def span(self, name: str, *, parent: Carrier | None = None, kind: Kind = "internal",
             attributes: Mapping[str, AttributeValue] | None = None,
             links: Sequence[Carrier] = (),
             quiet: tuple[type[BaseException], ...] = ()) -> contextlib.AbstractContextManager[SpanHandle]:
        """A span around a block, made current inside it. ``parent``: a stored carrier (an
        empty or malformed one means no trace: nothing is recorded); None: the current
        context. An exception leaving the block marks the span failed with its type (never
        its text), unless it is one of ``quiet`` (a business refusal)."""
        return contextlib.nullcontext(_NOOP)

    def record(self, name: str, start_s: float, end_s: float, *, parent: Carrier,
               attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """A span for something already over (times in epoch seconds), e.g. a transaction
        from its creation to its settling, which may have outlived the coordinator that
        started it."""


class _OtelSpan(SpanHandle):
    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        self._span.add_event(name, attributes)

    def fail(self, message: str) -> None:
        self._span.set_status(StatusCode.ERROR, message)

    def link(self, carrier: Carrier) -> None:
        found = _parent(carrier)
        if found is not None:
            self._span.add_link(found[1])

    def carrier(self) -> dict[str, str]:
        return inject(trace.set_span_in_context(self._span))


class _PassOn(SpanHandle):
    """A span not recorded, in a trace not sampled: its calls carry the parent's context on,
    so that participants see the trace's decision instead of starting traces of their own."""

    def __init__(self, carrier: dict[str, str]) -> None:
        self._carrier = carrier

    def carrier(self) -> dict[str, str]:
        return dict(self._carrier)


class _OtelTracing(Tracing):
    enabled = True

    def __init__(self, provider: Any) -> None:
        self._tracer = provider.get_tracer("txcoord")
        self._follows_parent = _drops_children_of_unsampled(provider)

    def span(self, name: str, *, parent: Carrier | None = None, kind: Kind = "internal",
             attributes: Mapping[str, AttributeValue] | None = None,
             links: Sequence[Carrier] = (),
             quiet: tuple[type[BaseException], ...] = ()) -> contextlib.AbstractContextManager[SpanHandle]:
        if parent is None:
            return self._span(name, None, kind, attributes, links, quiet)
        found = _parent(parent)
        if found is None:
            return contextlib.nullcontext(_NOOP)  # a transaction without a (valid) trace
        context, span_context = found
        if self._dropped(span_context):
            return self._passing_on(context, span_context)
        return self._span(name, context, kind, attributes, links, quiet)

    def _dropped(self, span_context: Any) -> bool:
        """The sampler would drop a child of ``span_context``: it follows unsampled parents."""
        return self._follows_parent and not span_context.trace_flags.sampled

    @contextlib.contextmanager
    def _passing_on(self, context: Any, span_context: Any) -> Iterator[SpanHandle]:
        """The sampler would drop this span anyway, as most of a sampled service's: skip the
        SDK's work (~27 of ~30 us a span), but keep the unsampled context current, so that
        spans started inside (the participant's barrier, the handler, the service's own)
        follow the trace's decision instead of starting traces of their own."""
        token = otel_context.attach(context)
        try:
            yield _PassOn(inject(trace.set_span_in_context(trace.NonRecordingSpan(span_context))))
        finally:
            otel_context.detach(token)

    @contextlib.contextmanager
    def _span(self, name: str, context: Any, kind: Kind,
              attributes: Mapping[str, AttributeValue] | None, links: Sequence[Carrier],
              quiet: tuple[type[BaseException], ...]) -> Iterator[SpanHandle]:
        # Exceptions are not recorded as the SDK would (message and stack trace): their text
        # may quote SQL parameters or payloads. The span says the exception's type only.
        with self._tracer.start_as_current_span(
                name, context=context, kind=_KINDS[kind], attributes=attributes,
                links=_links(links), record_exception=False,
                set_status_on_exception=False) as span:
            handle = _OtelSpan(span)
            try:
                yield handle
            except quiet:
                raise
            except Exception as exc:
                handle.fail(type(exc).__name__)
                raise

    def record(self, name: str, start_s: float, end_s: float, *, parent: Carrier,
               attributes: Mapping[str, AttributeValue] | None = None) -> None:
        found = _parent(parent)
        if found is None or self._dropped(found[1]):
            return
        span = self._tracer.start_span(name, context=found[0], attributes=attributes,
                                       start_time=_ns(start_s))
        span.end(end_time=_ns(max(start_s, end_s)))


def _parent(carrier: Carrier) -> tuple[Any, Any] | None:
    """The context ``carrier`` stands for and its span's context; None when it names no
    valid span (no traceparent, or a malformed one)."""
    if TRACEPARENT not in carrier:
        return None
    context = _extract(tuple(carrier.items()))
    span_context = trace.get_current_span(context).get_span_context()
    return (context, span_context) if span_context.is_valid else None


if trace is not None:
    _KINDS = {"internal": SpanKind.INTERNAL, "server": SpanKind.SERVER, "client": SpanKind.CLIENT}

OFF = Tracing()


def tracing_for(provider: Any = None) -> Tracing:
    """Tracing through ``provider`` (an OpenTelemetry ``TracerProvider``); None: the global
    provider, if the application set one. Off when opentelemetry is not installed."""
    if trace is None:
        if provider is not None:
            raise RuntimeError('a tracer provider was given but opentelemetry is not installed: '
                               'pip install "txcoord[otel]"')
        return OFF
    if provider is None:
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return OFF  # nobody configured tracing: skip the API's no-op spans too
    return _OtelTracing(provider)


def current_carrier() -> dict[str, str]:
    """The caller's current trace context, to send with a call (empty without one, or
    without opentelemetry)."""
    return inject(None) if trace is not None else {}


@contextlib.contextmanager
def as_current(carrier: Carrier) -> Iterator[None]:
    """The context ``carrier`` stands for, made current inside the block: work done later
    for something that was traced (an outbox message's delivery) joins its trace. Nothing
    without a ``traceparent`` or without opentelemetry."""
    if trace is None or TRACEPARENT not in carrier:
        yield
        return
    token = otel_context.attach(_extract(tuple(carrier.items())))
    try:
        yield
    finally:
        otel_context.detach(token)


def inject(context: Any) -> dict[str, str]:
    """``context`` (None: the current one) as a carrier, bounded for storing."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return bounded_carrier(carrier)


def bounded_carrier(carrier: Carrier) -> dict[str, str]:
    """``carrier`` without the entries past :data:`MAX_CARRIER_BYTES` (``traceparent`` first,
    so that the trace itself always survives; then the rest in key order)."""
    kept: dict[str, str] = {}
    room = MAX_CARRIER_BYTES
    for key in sorted(carrier, key=lambda k: (k != TRACEPARENT, k)):
        size = len(key) + len(carrier[key])
        if size <= room:
            kept[key] = carrier[key]
            room -= size
    return kept


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """The propagation fields of gRPC metadata (other headers and binary values left out)."""
    if trace is None or not metadata:
        return {}
    fields = propagate.get_global_textmap().fields
    return bounded_carrier({k: v for k, v in metadata if k in fields and isinstance(v, str)})


def _drops_children_of_unsampled(provider: Any) -> bool:
    """Whether ``provider``'s sampler drops every span whose parent was not sampled (the
    SDK's default, parent-based samplers), asked once with a made-up unsampled parent."""
    sampler = getattr(provider, "sampler", None)
    if sampler is None:
        return False
    parent = trace.NonRecordingSpan(trace.SpanContext(
        trace_id=1, span_id=1, is_remote=True, trace_flags=trace.TraceFlags(0)))
    result = sampler.should_sample(trace.set_span_in_context(parent), 1, "probe")
    return not result.decision.is_sampled()


def _links(carriers: Sequence[Carrier]) -> list[Any]:
    found = (_parent(carrier) for carrier in carriers)
    return [Link(parent[1]) for parent in found if parent is not None]


@functools.lru_cache(maxsize=4096)
def _extract(carrier: tuple[tuple[str, str], ...]) -> Any:
    """The context a carrier stands for. Cached: every span of a transaction has the same
    parent, and parsing it again cost each span about a fifth of its own price."""
    return propagate.extract(dict(carrier))


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)
