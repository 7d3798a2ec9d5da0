"""A tracer provider as the standard ``OTEL_*`` environment variables describe it.

``txc serve`` traces when the variables ask for it and the ``otel`` extra is installed:

* ``OTEL_TRACES_EXPORTER`` names the exporters (``otlp``, ``console``, ``none``; any other
  installed one by its entry-point name); unset, an ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` means ``otlp``, and nothing at all means off;
* ``otlp`` is OTLP over gRPC, or over HTTP when ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` is
  ``http/protobuf`` (that exporter installed separately); the exporter reads its own
  ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, certificates, timeout);
* the SDK reads the rest itself: ``OTEL_SERVICE_NAME`` (default here: ``txcoord``),
  ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*``,
  ``OTEL_PROPAGATORS``; ``OTEL_SDK_DISABLED=true`` turns it all off.

The provider is handed to the coordinator, not made global: tracing is part of its
options like everything else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger("txcoord.tracing")

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for something that cannot be built."""


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The exporters the variables ask for (empty: tracing off)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER")
    if raw is None:
        return ["otlp"] if any(env.get(name) for name in ENDPOINTS) else []
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return [] if names in ([], ["none"]) else [n for n in names if n != "none"]


def tracer_provider_from_env(env: Mapping[str, str] | None = None) -> Any:
    """An SDK ``TracerProvider`` exporting where ``env`` (default: ``os.environ``) says, or
    None when it asks for no tracing. Raises :class:`TracingConfigError` naming the variable
    when it asks for what is not installed. ``env`` picks the exporters; the SDK and the
    exporters read their own settings (service name, sampler, endpoint) from the process'
    environment. Services using the participant SDK pass it as
    ``HostOptions(tracer_provider=tracer_provider_from_env())``."""
    env = os.environ if env is None else env
    names = exporter_names(env)
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingConfigError('OTEL_* variables ask for traces but the OpenTelemetry SDK is '
                                 'not installed: pip install "txcoord[otel]"') from None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "txcoord"}))
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    log.info("tracing: exporting spans to %s", ", ".join(names))
    return provider


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    entry = _entry_point_name(name, env)
    found = entry_points(group="opentelemetry_traces_exporter", name=entry)
    if not found:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: no trace exporter {name!r} installed "
                                 f"(entry point {entry!r}); the otel extra brings otlp over "
                                 "gRPC and console")
    return next(iter(found)).load()()


def _entry_point_name(name: str, env: Mapping[str, str]) -> str:
    if name != "otlp":
        return name
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    return "otlp_proto_http" if protocol.startswith("http") else "otlp_proto_grpc"
