"""The two public facades, pinned: a name added, dropped or renamed here is an API change
that the changelog and the docs must follow. Everything else is internal and may move."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

COORDINATOR = {
    "CoordinatorClient", "CoordinatorServer", "DevEtcd", "Failover", "ListFilter", "Notify",
    "ParticipantClient", "Retry", "SETTLED_STATES", "Saga", "ServerOptions", "Step",
    "TERMINAL_STATES", "TlsFiles", "TracingConfigError", "TwoPhase", "WaitTimedOut", "pb", "ppb", "ppb_grpc",
    "settled", "tracer_provider_from_env",
}

PARTICIPANT = {
    "Barrier", "BarrierOptions", "BranchContext", "BranchKey", "BusinessFn", "Decision",
    "Decoder", "DsnError", "Handler", "HostOptions", "InDoubtBranch", "MigrationError", "Op",
    "OutboxBacklog", "OutboxError", "OutboxMessage", "Outcome", "ParticipantError",
    "ParticipantHost", "ParticipantMetrics", "PermanentDeliveryError",
    "PrometheusParticipantMetrics", "PurgeOptions", "PurgeResult", "RecoveryReport", "Refused",
    "Relay", "RelayOptions", "RelayStats", "Reply", "Sender", "StartSagaSender", "TlsFiles",
    "TwoPhase", "TwoPhaseOptions", "TwoPhaseUnavailable", "check_two_phase", "create_engine",
    "json_log_handler", "json_object", "outbox", "purge", "purge_two_phase", "upgrade",
}


@pytest.mark.parametrize(("module", "names"), [("coordinator", COORDINATOR),
                                               ("coordinator.participant", PARTICIPANT)])
def test_the_facade_exports_exactly_its_names_and_each_resolves(module: str, names: set[str]) -> None:
    facade = importlib.import_module(module)
    assert set(facade.__all__) == names
    assert len(facade.__all__) == len(names), "a name is listed twice"
    for name in names:
        assert getattr(facade, name) is not None, name


def test_the_participant_facade_does_not_load_the_server() -> None:
    """A participant service pays for the SDK only: no engine, log or server modules."""
    code = ("import sys, coordinator.participant; "
            "print(sorted(m for m in sys.modules if m.startswith(('coordinator.server', "
            "'coordinator.engine', 'coordinator.log'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
