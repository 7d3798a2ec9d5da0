"""Tracing's pure parts: carriers bounded for the record, and the OTEL_* configuration."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, ParentBasedTraceIdRatio
from opentelemetry.trace import StatusCode

from coordinator.domain.records import BranchPlan, Protocol, new_record
from coordinator.telemetry._tracing import (
    MAX_CARRIER_BYTES,
    OFF,
    Tracing,
    bounded_carrier,
    from_metadata,
    tracing_for,
)
from coordinator.telemetry._tracing_env import TracingConfigError, exporter_names, tracer_provider_from_env

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_carrier_keeps_the_traceparent_and_drops_what_outgrows_the_bound() -> None:
    huge = {"tracestate": "k=" + "v" * 2000, "traceparent": PARENT, "baggage": "user=ann"}
    kept = bounded_carrier(huge)
    assert kept == {"traceparent": PARENT, "baggage": "user=ann"}
    assert sum(len(k) + len(v) for k, v in kept.items()) <= MAX_CARRIER_BYTES


def test_only_the_propagators_fields_are_taken_from_grpc_metadata() -> None:
    metadata = [("traceparent", PARENT), ("authorization", "Bearer secret"),
                ("x-bin", b"\x00"), ("tracestate", "a=b")]
    assert from_metadata(metadata) == {"traceparent": PARENT, "tracestate": "a=b"}
    assert from_metadata(None) == {}


def test_without_a_configured_provider_tracing_is_off() -> None:
    assert tracing_for(None) is OFF  # the global provider was never set in this process
    assert tracing_for(TracerProvider()).enabled


@pytest.mark.parametrize(("env", "names"), [
    ({}, []),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, []),
    ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
])
def test_the_variables_decide_whether_and_where_spans_go(env: dict[str, str],
                                                        names: list[str]) -> None:
    assert exporter_names(env) == names


def test_a_provider_from_the_variables_names_the_service_txcoord_unless_told() -> None:
    provider = tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "txcoord"
    provider.shutdown()
    assert tracer_provider_from_env({}) is None


def test_an_exporter_that_is_not_installed_is_refused_naming_the_variable() -> None:
    with pytest.raises(TracingConfigError, match="OTEL_TRACES_EXPORTER: no trace exporter 'zipkin'"):
        tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(TracingConfigError, match="otlp_proto_http"):
        tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "otlp",
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})


def test_spans_under_an_unsampled_parent_cost_nothing_and_pass_the_decision_on() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(0.5))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = tracing_for(provider)
    unsampled = {"traceparent": PARENT[:-2] + "00"}
    with tracing.span("txc.execute", parent=unsampled, kind="client") as span:
        assert span.carrier() == unsampled  # the participant sees the same trace, unsampled
    tracing.record("txc.saga", 1.0, 2.0, parent=unsampled)
    with tracing.span("txc.execute", parent={"traceparent": PARENT}) as span:
        assert span.carrier()["traceparent"].split("-")[1] == PARENT.split("-")[1]
    assert [s.name for s in exporter.get_finished_spans()] == ["txc.execute"]


def test_a_sampler_that_records_children_of_unsampled_parents_is_obeyed() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)  # not parent-based: samples every span
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing_for(provider).span("txc.execute", parent={"traceparent": PARENT[:-2] + "00"}):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["txc.execute"]


def exporting(sampler: Any) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing_for(provider), exporter


def test_spans_started_inside_an_unsampled_call_follow_its_decision() -> None:
    tracing, exporter = exporting(ParentBased(ALWAYS_ON))  # would record any new root
    with tracing.span("txc.participant.execute", parent={"traceparent": PARENT[:-2] + "00"}), \
            tracing.span("txc.barrier"), tracing.span("accounts.debit"):
        pass
    assert exporter.get_finished_spans() == ()


def test_an_exception_marks_its_span_by_type_only_and_a_refusal_not_at_all() -> None:
    tracing, exporter = exporting(ALWAYS_ON)
    with pytest.raises(ValueError), tracing.span("accounts.debit"):
        raise ValueError("INSERT ... VALUES ('4111 1111 1111 1111')")
    with pytest.raises(KeyError), tracing.span("orders.create", quiet=(KeyError,)):
        raise KeyError("out of stock")
    failed, refused = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError" and not failed.events
    assert refused.status.status_code is StatusCode.UNSET and not refused.events


def test_a_malformed_traceparent_is_no_trace() -> None:
    tracing, exporter = exporting(ALWAYS_ON)
    for bad in ("00-zz<script>-x-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        with tracing.span("txc.execute", parent={"traceparent": bad}) as span:
            assert span.carrier() == {}
        tracing.record("txc.saga", 1.0, 2.0, parent={"traceparent": bad})
        record = new_record(gid="g", protocol=Protocol.SAGA, plan=(BranchPlan("a", "h:1", "a.do"),),
                            now=1.0, timeout_s=1, trace=(("traceparent", bad),))
        assert record.trace_id == ""
    assert exporter.get_finished_spans() == ()
