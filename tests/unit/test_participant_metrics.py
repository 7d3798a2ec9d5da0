"""The participant SDK's metrics object without databases: off by default, every hook
recorded when on, and the gauges of a recovery round and a relay's backlog (the
integration tests in tests/participant*/test_metrics.py move the rest through real calls)."""

from __future__ import annotations

import inspect

from prometheus_client import CollectorRegistry

from coordinator.participant import (
    HostOptions,
    ParticipantMetrics,
    PrometheusParticipantMetrics,
    RelayOptions,
)
from tests.support.metrics import collect, value


def test_metrics_are_off_by_default() -> None:
    for options in (HostOptions(), RelayOptions()):
        assert type(options.metrics) is ParticipantMetrics and not options.metrics.enabled
    assert PrometheusParticipantMetrics(CollectorRegistry()).enabled


def test_every_hook_records_something_when_on() -> None:
    hooks = {name for name, _ in inspect.getmembers(ParticipantMetrics, inspect.isfunction)
             if not name.startswith("_")}
    assert {"call", "duplicate", "recovery_round", "relay_pass", "outbox_backlog"} <= hooks
    for name in hooks:
        assert name in vars(PrometheusParticipantMetrics), f"{name} is not recorded"


def test_a_recovery_round_sets_the_in_doubt_gauges_from_what_it_left() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusParticipantMetrics(registry)
    metrics.recovery_round(committed=1, aborted=0, in_doubt=2, oldest_in_doubt_s=120.0)
    samples = collect(registry)
    assert value(samples, "txc_participant_two_phase_in_doubt") == 2
    assert value(samples, "txc_participant_two_phase_in_doubt_oldest_age_seconds") == 120.0
    assert value(samples, "txc_participant_two_phase_recovered_total", outcome="committed") == 1
    metrics.recovery_round(0, 0, 0, 0.0)  # nothing in doubt any more
    samples = collect(registry)
    assert value(samples, "txc_participant_two_phase_in_doubt") == 0
    assert value(samples, "txc_participant_two_phase_in_doubt_oldest_age_seconds") == 0


def test_relay_passes_and_backlog() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusParticipantMetrics(registry)
    metrics.relay_pass(sent=3, retry_later=2, failed=1)
    metrics.relay_pass(sent=1, retry_later=0, failed=0)
    metrics.outbox_backlog(42, 7.5)
    samples = collect(registry)
    assert {o: value(samples, "txc_participant_outbox_deliveries_total", outcome=o)
            for o in ("sent", "retry", "failed")} == {"sent": 4, "retry": 2, "failed": 1}
    assert value(samples, "txc_participant_outbox_backlog") == 42
    assert value(samples, "txc_participant_outbox_lag_seconds") == 7.5
