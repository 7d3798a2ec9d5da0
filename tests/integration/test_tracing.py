"""OpenTelemetry traces: one trace per transaction, from the caller through the coordinator
to the participant SDK's barrier and business function, on real etcd, PostgreSQL and
MariaDB (spans caught by the SDK's in-memory exporter)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator import CoordinatorClient, Saga, Step, TwoPhase, pb
from coordinator.participant import BranchContext, HostOptions, ParticipantHost, Refused
from coordinator.server import DevEtcd, ServerOptions
from tests.support import databases
from tests.support.coordinators import running, server_options

from .conftest import CoordinatorProcess, client_for
from .participant import ScriptedParticipant
from .test_operator import broken_refund
from .test_saga_service import FAST

pytestmark = pytest.mark.integration


@pytest.fixture
def exported() -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@asynccontextmanager
async def host_on(kind: str, provider: TracerProvider) -> AsyncIterator[str]:
    """A traced participant host on a fresh database of ``kind``, by address: ``<kind>.do``
    succeeds (touching its database), ``<kind>.refuse`` refuses, ``<kind>.undo`` compensates."""
    name = f"txc_trace_{kind}_{id(provider) % 100000}"
    async with databases.migrated(kind, databases.SERVERS[kind], name, MetaData(),
                                  databases.Db) as db:
        host = ParticipantHost(db.engine, HostOptions(tracer_provider=provider))

        @host.execute(f"{kind}.do")
        async def do(ctx: BranchContext, conn: AsyncConnection, body: bytes) -> bytes:
            await conn.execute(text("SELECT 1"))
            return b"done"

        @host.execute(f"{kind}.refuse")
        async def refuse(ctx: BranchContext, conn: AsyncConnection, body: bytes) -> bytes:
            raise Refused("no")

        @host.compensate(f"{kind}.undo")
        async def undo(ctx: BranchContext, conn: AsyncConnection, body: bytes) -> None:
            return None

        host.prepare(f"{kind}.do")(do)

        port = await host.start("127.0.0.1:0")
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await host.stop(1.0)


@asynccontextmanager
async def traced(etcd: DevEtcd, prefix: str, provider: TracerProvider, *kinds: str,
                 transport: str = "batch") -> AsyncIterator[tuple[CoordinatorClient, list[str]]]:
    """A traced coordinator (a client to it) and a traced host on each database kind (their
    addresses), all through ``provider``."""
    options = replace(server_options(etcd, prefix), tracer_provider=provider,
                      participant_transport=transport)
    async with AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(host_on(kind, provider)) for kind in kinds]
        server = await stack.enter_async_context(running(options))
        yield await stack.enter_async_context(client_for(server)), hosts


def by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: Sequence[ReadableSpan], name: str, **attributes: object) -> ReadableSpan:
    found = [s for s in by_name(spans, name)
             if all((s.attributes or {}).get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, f"{name} {attributes}: {len(found)} spans of {[s.name for s in spans]}"
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


async def until_span(exporter: InMemorySpanExporter, name: str, count: int = 1) -> list[ReadableSpan]:
    """The finished spans once ``count`` named ``name`` are among them (the summary span is
    recorded as the transaction settles, which may be just after the reply is sent)."""
    for _ in range(100):
        spans = list(exporter.get_finished_spans())
        if len(by_name(spans, name)) >= count:
            return spans
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {name} span: {[s.name for s in exporter.get_finished_spans()]}")


@pytest.mark.parametrize("transport", ["batch", "unary"])
async def test_one_saga_across_two_participants_is_one_trace_from_the_caller_to_the_handlers(
        etcd: DevEtcd, prefix: str, gid: str, transport: str,
        exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = exported
    async with traced(etcd, prefix, provider, "postgresql", "mariadb",
                      transport=transport) as (client, (pg, maria)):
        saga = Saga([Step("debit", pg, "postgresql.do", "postgresql.undo", b""),
                     Step("order", maria, "mariadb.do", "mariadb.undo", b"")], gid=gid)
        with provider.get_tracer("shop").start_as_current_span("checkout") as checkout:
            reply = await client.start_saga(saga, wait=True)
        assert reply.transaction.state == pb.TX_STATE_COMMITTED
        spans = await until_span(exporter, "txc.saga")

    assert {trace_id(s) for s in spans} == {checkout.get_span_context().trace_id}
    assert reply.transaction.trace_id == f"{checkout.get_span_context().trace_id:032x}"
    start = one(spans, "txc.v1.Coordinator/StartSaga")
    assert start.kind is SpanKind.SERVER
    assert parent_of(start) == checkout.get_span_context().span_id
    summary = one(spans, "txc.saga", **{"txc.gid": gid})
    assert summary.attributes is not None and summary.attributes["txc.state"] == "COMMITTED"
    assert parent_of(summary) == parent_of(one(spans, "txc.log.create")) == span_id(start)
    assert by_name(spans, "txc.log.write") and all(
        parent_of(s) == span_id(start) for s in by_name(spans, "txc.log.write"))
    for branch, kind in (("debit", "postgresql"), ("order", "mariadb")):
        call = one(spans, "txc.execute", **{"txc.branch": branch})
        assert call.kind is SpanKind.CLIENT and parent_of(call) == span_id(start)
        served = one(spans, "txc.participant.execute", **{"txc.branch": branch})
        assert served.kind is SpanKind.SERVER and parent_of(served) == span_id(call)
        assert (served.attributes or {})["txc.outcome"] == "ok"
        barrier = [s for s in by_name(spans, "txc.barrier") if parent_of(s) == span_id(served)]
        assert len(barrier) == 1
        handler = one(spans, f"{kind}.do")
        assert parent_of(handler) == span_id(barrier[0])


async def test_a_compensated_saga_shows_the_refusal_and_the_compensation_in_its_trace(
        etcd: DevEtcd, prefix: str, gid: str,
        exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = exported
    async with traced(etcd, prefix, provider, "postgresql") as (client, (pg,)):
        saga = Saga([Step("a", pg, "postgresql.do", "postgresql.undo", b""),
                     Step("b", pg, "postgresql.refuse", "postgresql.undo", b"")], gid=gid)
        reply = await client.start_saga(saga, wait=True)  # no caller span: a trace of its own
        assert reply.transaction.state == pb.TX_STATE_COMPENSATED
        spans = await until_span(exporter, "txc.saga")

    start = one(spans, "txc.v1.Coordinator/StartSaga")
    assert start.parent is None and {trace_id(s) for s in spans} == {trace_id(start)}
    refused = one(spans, "txc.participant.execute", **{"txc.branch": "b"})
    assert (refused.attributes or {})["txc.outcome"] == "failed"
    undo = one(spans, "txc.compensate", **{"txc.branch": "a"})
    assert parent_of(undo) == span_id(start)
    assert parent_of(one(spans, "txc.participant.compensate", **{"txc.branch": "a"})) == span_id(undo)
    assert (one(spans, "txc.saga").attributes or {})["txc.state"] == "COMPENSATED"


async def test_a_replayed_saga_continues_in_the_operators_trace_linked_to_the_original(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant,
        exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = exported
    tracer = provider.get_tracer("ops")
    options = replace(server_options(etcd, prefix), tracer_provider=provider)
    async with running(options) as server, client_for(server) as c:
        with tracer.start_as_current_span("checkout") as checkout:
            r = await c.start_saga(broken_refund(participant, "stuck-traced"), wait=True)
        assert r.transaction.state == pb.TX_STATE_FAILED
        participant.healed = True
        with tracer.start_as_current_span("operator fixes refund") as fix:
            replayed = await c.replay("stuck-traced", "refund fixed")
        assert replayed.trace_id == f"{fix.get_span_context().trace_id:032x}"
        assert (await c.wait_settled("stuck-traced")).state == pb.TX_STATE_COMPENSATED
        spans = await until_span(exporter, "txc.saga", count=2)

    original = checkout.get_span_context().trace_id
    replay = one(spans, "txc.v1.Coordinator/ReplayTransaction")
    assert trace_id(replay) == fix.get_span_context().trace_id != original
    assert [link.context.trace_id for link in replay.links] == [original]
    first, second = sorted(by_name(spans, "txc.saga"), key=lambda s: s.end_time or 0)
    assert (trace_id(first), (first.attributes or {})["txc.state"]) == (original, "FAILED")
    assert (trace_id(second), (second.attributes or {})["txc.state"]) == (trace_id(replay), "COMPENSATED")
    healed = [s for s in by_name(spans, "txc.compensate") if trace_id(s) == trace_id(replay)]
    assert healed and all(parent_of(s) == span_id(replay) for s in healed)


async def test_without_a_tracer_provider_nothing_is_recorded_and_records_carry_no_trace(
        etcd: DevEtcd, prefix: str, gid: str, participant: ScriptedParticipant,
        exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = exported
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        with provider.get_tracer("shop").start_as_current_span("checkout"):
            saga = Saga([Step("a", participant.address, "a.do", "a.undo", {}, retry=FAST)], gid=gid)
            await c.start_saga(saga, wait=True)
        stored = await server.log.get(gid)
        assert (await c.get(gid)).trace_id == ""
    assert stored is not None and stored.record.trace == ()
    assert [s.name for s in exporter.get_finished_spans()] == ["checkout"]


async def test_a_coordinator_that_takes_over_continues_the_transactions_trace(
        etcd: DevEtcd, prefix: str, gid: str, participant: ScriptedParticipant,
        exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = exported
    options = replace(server_options(etcd, prefix), tracer_provider=provider)
    saga = Saga([Step("slow", participant.address, "a.do", "a.undo", {"sleep": 1.0}, retry=FAST),
                 Step("next", participant.address, "b.do", "b.undo", {}, retry=FAST)], gid=gid)
    async with running(options) as successor:
        first = await start_then_stop(options, saga)
        async with client_for(successor) as c:
            assert (await c.wait_settled(gid, 30)).state == pb.TX_STATE_COMMITTED
        spans = await until_span(exporter, "txc.saga")

    assert {trace_id(s) for s in spans} == {first}
    takeover = one(spans, "txc.takeover", **{"txc.gid": gid})
    start = one(spans, "txc.v1.Coordinator/StartSaga")
    assert parent_of(takeover) == parent_of(one(spans, "txc.saga")) == span_id(start)
    assert parent_of(one(spans, "txc.execute", **{"txc.branch": "next"})) == span_id(start)


async def start_then_stop(options: ServerOptions, saga: Saga) -> int:
    """Start ``saga`` on a coordinator of its own that stops while its first step runs (its
    lease revoked, so another claims the saga at once); the trace id the saga began in."""
    async with running(options) as doomed, client_for(doomed) as c:
        tx = (await c.start_saga(saga)).transaction
        await asyncio.sleep(0.3)
        assert (await c.get(tx.gid)).state == pb.TX_STATE_RUNNING
        stored = await doomed.log.get(tx.gid)
    assert stored is not None
    return int(dict(stored.record.trace)["traceparent"].split("-")[1], 16)


async def test_txc_serve_exports_spans_as_the_otel_variables_say(
        etcd: DevEtcd, prefix: str, gid: str, participant: ScriptedParticipant, tmp_path: Path,
        exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, _ = exported
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "txc-under-test",
           "OTEL_BSP_SCHEDULE_DELAY": "50"}
    coordinator = CoordinatorProcess(etcd, prefix, tmp_path, env)
    try:
        await coordinator.ready()
        async with client_for(coordinator.port) as c:
            saga = Saga([Step("a", participant.address, "a.do", "a.undo", {}, retry=FAST)], gid=gid)
            with provider.get_tracer("shop").start_as_current_span("checkout") as checkout:
                await c.start_saga(saga, wait=True)
        assert coordinator.terminate() == 0  # a clean stop flushes the spans still queued
    finally:
        coordinator.stop()
    output = coordinator.log_path.read_text()
    trace = f'"trace_id": "0x{checkout.get_span_context().trace_id:032x}"'
    for name in ("txc.v1.Coordinator/StartSaga", "txc.execute", "txc.saga"):
        assert f'"name": "{name}"' in output, name
    assert output.count(trace) >= 3 and '"service.name": "txc-under-test"' in output


def test_txc_serve_refuses_an_exporter_it_does_not_have_naming_the_variable() -> None:
    done = subprocess.run([sys.executable, "-m", "coordinator.cli", "serve", "--dev"],
                          env={**os.environ, "OTEL_TRACES_EXPORTER": "zipkin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER: no trace exporter 'zipkin'" in done.stderr


async def test_a_two_phase_commit_traces_votes_and_phase_two_into_the_prepared_transactions(
        etcd: DevEtcd, prefix: str, gid: str,
        exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = exported
    async with traced(etcd, prefix, provider, "postgresql", "mariadb") as (client, (pg, maria)):
        tx = TwoPhase([Step("debit", pg, "postgresql.do"), Step("order", maria, "mariadb.do")],
                      gid=gid)
        reply = await client.start_two_phase(tx, wait=True)
        assert reply.transaction.state == pb.TX_STATE_COMMITTED
        spans = await until_span(exporter, "txc.two_phase")

    start = one(spans, "txc.v1.Coordinator/StartTwoPhase")
    assert {trace_id(s) for s in spans} == {trace_id(start)}
    for branch, kind in (("debit", "postgresql"), ("order", "mariadb")):
        for op in ("prepare", "commit"):
            call = one(spans, f"txc.{op}", **{"txc.branch": branch})
            served = one(spans, f"txc.participant.{op}", **{"txc.branch": branch})
            assert parent_of(call) == span_id(start) and parent_of(served) == span_id(call)
        local = [s for s in by_name(spans, "txc.two_phase.local")
                 if parent_of(s) == span_id(one(spans, "txc.participant.prepare",
                                                **{"txc.branch": branch}))]
        assert len(local) == 1 and parent_of(one(spans, f"{kind}.do")) == span_id(local[0])
