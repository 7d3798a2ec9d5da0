"""The SDK's 2PC metrics on real PostgreSQL (prepared transactions) and MariaDB (XA): votes,
their duplicates and hanging refusals, null aborts, and the in-doubt gauges that recovery
rounds refresh."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from coordinator import ppb
from coordinator.participant import (
    Decision,
    HostOptions,
    Op,
    ParticipantHost,
    PrometheusParticipantMetrics,
    TwoPhase,
    TwoPhaseOptions,
)
from coordinator.participant.two_phase._recovery import InDoubtResolver, Verdict
from tests.support.metrics import Samples, collect, value

from ._service import build
from .conftest import Db, call
from .test_recovery import StubDecisions

pytestmark = pytest.mark.integration

OK, FAILED = ppb.OUTCOME_OK, ppb.OUTCOME_FAILED
IN_DOUBT = "txc_participant_two_phase_in_doubt"
OLDEST = "txc_participant_two_phase_in_doubt_oldest_age_seconds"


def metered_host(db: Db, **two_phase: float) -> tuple[ParticipantHost, CollectorRegistry]:
    registry = CollectorRegistry()
    options = HostOptions(call_timeout_s=10.0, metrics=PrometheusParticipantMetrics(registry),
                          two_phase=TwoPhaseOptions(**two_phase))
    return build(db.engine, options), registry


@pytest.fixture
async def metered(db: Db) -> AsyncIterator[tuple[ParticipantHost, CollectorRegistry]]:
    """A host (not serving gRPC) reporting into a registry of its own; stopped at the end,
    so that a failed test's prepared branches can be rolled back (MariaDB: its kept
    sessions end)."""
    host, registry = metered_host(db)
    yield host, registry
    await host.stop(0)


def counted(samples: Samples) -> dict[str, float]:
    """The 2PC counters with a value, by name and op."""
    found = {"prepared": value(samples, "txc_participant_two_phase_prepared_total")}
    for name in ("barrier_duplicates", "null_compensations", "hanging_refusals"):
        for op in ("prepare", "commit", "abort"):
            found[f"{name}/{op}"] = value(samples, f"txc_participant_{name}_total", op=op)
    return {k: v for k, v in found.items() if v}


async def test_votes_duplicates_null_aborts_and_hanging_prepares_are_counted(
        metered: tuple[ParticipantHost, CollectorRegistry], gid: str) -> None:
    host, registry = metered
    assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK
    assert counted(collect(registry)) == {"prepared": 1}
    assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK  # a retry
    for _ in range(2):
        assert (await call(host, Op.COMMIT, gid, "a", {})).outcome == OK
    assert counted(collect(registry)) == {"prepared": 1, "barrier_duplicates/prepare": 1,
                                          "barrier_duplicates/commit": 1}
    for _ in range(2):  # an abort that overtook its prepare, then its retry
        assert (await call(host, Op.ABORT, gid, "b", {})).outcome == OK
    late = await call(host, Op.PREPARE, gid, "b", {"id": f"{gid}-b"})
    assert late.outcome == FAILED and "hanging" in late.message
    samples = collect(registry)
    assert counted(samples) == {"prepared": 1, "barrier_duplicates/prepare": 1,
                                "barrier_duplicates/commit": 1, "barrier_duplicates/abort": 1,
                                "null_compensations/abort": 1, "hanging_refusals/prepare": 1}
    assert value(samples, "txc_participant_calls_total", op="prepare", outcome="failed") == 1
    assert value(samples, "txc_participant_calls_total", op="abort", outcome="ok") == 2


async def test_recovery_rounds_set_the_in_doubt_gauges_and_count_what_they_finish(
        db: Db, metered: tuple[ParticipantHost, CollectorRegistry], gid: str) -> None:
    host, registry = metered
    assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK
    await asyncio.sleep(0.2)  # an age the gauge can show
    listed = await host.recover()  # no coordinator configured: the round only lists
    samples = collect(registry)
    assert gid in {b.gid for b in listed.left}
    assert value(samples, IN_DOUBT) == len(listed.left) >= 1
    assert value(samples, OLDEST) >= 0.2

    # What the host's stop does: the kept MariaDB session ends, so another process's
    # resolver (here, with the coordinator's decision stubbed) may finish the branch.
    await host._two_phase.close()
    stub = StubDecisions({gid: Verdict(Decision.COMMIT, "TX_STATE_COMMITTING")})
    metrics = PrometheusParticipantMetrics(resolver_registry := CollectorRegistry())
    report = await InDoubtResolver(TwoPhase(db.engine), stub, 1.0, metrics=metrics).run_once()
    assert gid in {b.gid for b in report.committed}
    after = collect(resolver_registry)
    assert value(after, "txc_participant_two_phase_recovered_total", outcome="committed") == 1
    assert value(after, IN_DOUBT) == len(report.left) == len(listed.left) - 1
    assert await db.value(gid) == 1


async def test_a_host_with_metrics_and_no_coordinator_lists_in_doubt_branches_by_itself(
        db: Db, gid: str) -> None:
    host, registry = metered_host(db, recovery_interval_s=0.1)
    await host.start("127.0.0.1:0")
    try:
        assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == OK
        for _ in range(100):  # the loop's rounds refresh the gauge, nobody calls recover()
            if value(collect(registry), OLDEST) > 0:
                break
            await asyncio.sleep(0.05)
        assert value(collect(registry), IN_DOUBT) >= 1
        assert value(collect(registry), OLDEST) > 0
        assert (await call(host, Op.ABORT, gid, "a", {})).outcome == OK
    finally:
        await host.stop(0)
