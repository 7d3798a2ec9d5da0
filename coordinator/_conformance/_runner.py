"""Runs the catalogue against one participant, case after case, and collects verdicts."""

from __future__ import annotations

import asyncio
import time
import uuid

from ..client._participant import ParticipantClient
from ..rpc._tls import TlsFiles
from ._cases import CASES, Case
from ._checks import Effects
from ._driver import Driver, Violation
from ._notify_cases import NotifyRun
from ._preflight import preflight
from ._report import FAIL, PASS, SKIP, CaseResult, Report
from ._saga_cases import SagaRun
from ._scenario import Observe, SagaSpec, Scenario, TwoPhaseSpec
from ._two_phase_cases import TwoPhaseRun

CASE_TIMEOUT_S = 60.0


class _Unreachable(Exception):
    """The participant is down: this case's failure is the last verdict worth running for."""

    def __init__(self, result: CaseResult) -> None:
        super().__init__(result.got)
        self.result = result


async def check(address: str, scenario: Scenario, *, tls_ca: bytes | None = None,
                tls_identity: TlsFiles | None = None, timeout_s: float = 5.0,
                only: set[str] | None = None) -> Report:
    """Every case (or those named in ``only``) against the participant at ``address``.

    Raises Unreachable when it cannot be reached, and ScenarioError when the service does
    not bear out the scenario's ``observe``: both before any case runs."""
    run_id = uuid.uuid4().hex[:10]
    wanted = [case for case in CASES if only is None or case.name in only]
    async with ParticipantClient(address, timeout_s=timeout_s, tls_ca=tls_ca,
                                 tls_identity=tls_identity) as client:
        driver = Driver(client, run_id, scenario.branch, timeout_s=timeout_s)
        await preflight(client, driver, scenario, [case.protocol for case in wanted])
        results: list[CaseResult] = []
        unreachable = False
        for case in wanted:
            if unreachable:
                results.append(_skip(case, "not run: the participant is unreachable"))
                continue
            try:
                results.append(await _run_case(case, scenario, driver))
            except _Unreachable as stop:
                results.append(stop.result)
                unreachable = True
    return Report(address, run_id, results)


async def _run_case(case: Case, scenario: Scenario, driver: Driver) -> CaseResult:
    missing = _missing(case, scenario)
    if missing:
        return _skip(case, missing)
    effects = Effects(driver, _observe(case, scenario))
    start = time.monotonic()
    try:
        await asyncio.wait_for(case.run(_context(case, scenario, driver, effects)), CASE_TIMEOUT_S)
    except Violation as v:
        failed = _failed(case, start, effects, v.expected, v.got, v.impact)
        if v.unreachable:
            raise _Unreachable(failed) from None
        return failed
    except TimeoutError:
        return _failed(case, start, effects, f"the case to finish within {CASE_TIMEOUT_S:g} s",
                       "no end", "calls hang: the coordinator's calls would time out and pile up")
    except Exception as exc:  # a bug of the checker's, or a reply it cannot read: say so
        return _failed(case, start, effects, "the case to run", f"checker error: {exc!r}",
                       "no verdict: report this to txcoord")
    return CaseResult(case.name, case.checks, PASS, time.monotonic() - start, notes=effects.notes)


def _failed(case: Case, start: float, effects: Effects, expected: str, got: str,
            impact: str) -> CaseResult:
    return CaseResult(case.name, case.checks, FAIL, time.monotonic() - start, expected, got, impact,
                      notes=effects.notes)


def _skip(case: Case, reason: str) -> CaseResult:
    return CaseResult(case.name, case.checks, SKIP, reason=reason)


def _missing(case: Case, scenario: Scenario) -> str:
    spec = scenario.section(case.protocol)
    if spec is None:
        return f"the scenario has no '{case.protocol}' section"
    if case.needs_refused and isinstance(spec, SagaSpec | TwoPhaseSpec) \
            and spec.refused_payload is None:
        return f"the scenario's '{case.protocol}' has no refused_payload"
    return ""


def _observe(case: Case, scenario: Scenario) -> Observe | None:
    spec = scenario.section(case.protocol)
    return spec.observe if spec is not None else None


def _context(case: Case, scenario: Scenario, driver: Driver,
             effects: Effects) -> SagaRun | TwoPhaseRun | NotifyRun:
    if case.protocol == "notify":
        assert scenario.notify is not None
        return NotifyRun(driver, scenario.notify, effects, "notify-" + case.name.split(".")[1])
    if case.protocol == "saga":
        assert scenario.saga is not None
        return SagaRun(driver, scenario.saga, effects, case.name.split(".")[1])
    assert scenario.two_phase is not None
    return TwoPhaseRun(driver, scenario.two_phase, effects, "2pc-" + case.name.split(".")[1])
