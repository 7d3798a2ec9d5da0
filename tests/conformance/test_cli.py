"""``txc participant check`` as CI runs it: exit codes, --json, --case, scenario errors."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from coordinator._conformance import ScenarioError, Unreachable, check, parse_scenario
from coordinator.cli import main

from ._memory import SCENARIO, Accounts, Breaks, serve


async def txc(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    # In a thread (the command runs its own event loop): the participant under test is
    # served by this test's loop meanwhile.
    code = await asyncio.to_thread(main, ["participant", "check", *args])
    return code, capsys.readouterr().out


def write(tmp_path: Path, body: object) -> str:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(body))
    return str(path)


async def test_exit_0_and_json_when_every_case_passes(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    server, address = await serve(Accounts())
    try:
        code, out = await txc(capsys, address, "--scenario", write(tmp_path, SCENARIO), "--json")
    finally:
        await server.stop(0)
    assert code == 0, out
    report = json.loads(out)
    assert report["passed"] is True and report["fail"] == 0 and report["pass"] == len(report["cases"])


async def test_exit_1_naming_the_failed_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server, address = await serve(Accounts(Breaks(hanging_guard=True)))
    try:
        code, out = await txc(capsys, address, "--scenario", write(tmp_path, SCENARIO),
                              "--case", "saga.hanging_execute", "--case", "saga.duplicate_execute")
    finally:
        await server.stop(0)
    assert code == 1, out
    assert "FAIL  saga.hanging_execute" in out and "PASS  saga.duplicate_execute" in out
    assert "money debited and never refunded" in out
    assert "DOES NOT CONFORM: 1 passed, 1 failed, 0 skipped" in out


async def test_exit_2_on_a_scenario_it_cannot_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {"saga": {**SCENARIO["saga"], "compensaton": "typo"}}  # type: ignore[dict-item]
    code, out = await txc(capsys, "127.0.0.1:1", "--scenario", write(tmp_path, bad))
    assert code == 2 and "unknown key(s) ['compensaton']" in out


async def test_an_unreachable_participant_is_said_once_before_any_case(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(Unreachable, match=r"127\.0\.0\.1:1 is unreachable"):
        await check("127.0.0.1:1", parse_scenario(SCENARIO), timeout_s=0.5)
    began = time.monotonic()
    code, out = await txc(capsys, "127.0.0.1:1", "--scenario", write(tmp_path, SCENARIO))
    assert code == 3 and out.count("unreachable") == 1 and "no case was run" in out, out
    assert "FAIL" not in out and "SKIP" not in out
    assert time.monotonic() - began < 5  # once, not ~3.3 s per case


@pytest.mark.parametrize(("section", "observe", "named"), [
    ("saga", {"operation": "accounts.balance", "field": "balanse"}, "saga.observe.field"),
    ("two_phase", {"operation": "accounts.balance", "field": "balance.now"}, "two_phase.observe.field"),
])
async def test_a_scenario_the_service_does_not_bear_out_exits_2_before_any_case(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str,
        observe: dict[str, str], named: str) -> None:
    accounts = Accounts()
    server, address = await serve(accounts)
    body = {**SCENARIO, section: {**SCENARIO[section], "observe": observe}}  # type: ignore[dict-item]
    try:
        code, out = await txc(capsys, address, "--scenario", write(tmp_path, body))
    finally:
        await server.stop(0)
    assert code == 2, out
    assert f"{named}: the service does not bear it out" in out and "its fields: balance" in out
    assert "no case was run" in out and "PASS" not in out and "FAIL" not in out
    assert accounts.balance == 1_000 and not accounts.rows and not accounts.prepared  # nothing done


async def test_cases_without_their_scenario_section_are_skipped() -> None:
    server, address = await serve(Accounts())
    try:
        report = await check(address, parse_scenario({"saga": {
            k: v for k, v in SCENARIO["saga"].items() if k != "refused_payload"}}))  # type: ignore[attr-defined]
    finally:
        await server.stop(0)
    skipped = {c.name: c.reason for c in report.cases if c.status == "skip"}
    assert report.passed
    assert skipped["saga.refused_not_undone"] == "the scenario's 'saga' has no refused_payload"
    assert all(name in skipped for name in ("2pc.prepare_commit", "2pc.commit_unknown"))


@pytest.mark.parametrize(("body", "message"), [
    ({}, "give at least one of 'saga', 'two_phase' and 'notify'"),
    ({"two_phase": {"operation": "x"}}, "two_phase: 'payload' is missing"),
    ({"two_phase": {"operation": "x", "payload": 1, "payload_base64": "AA=="}}, "not both"),
    ({"two_phase": {"operation": "x", "payload_base64": "!"}}, "not base64"),
    ({"saga": {"action": "a", "compensation": "", "payload": {}}}, "saga.compensation must be"),
])
def test_scenario_errors_name_the_field(body: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(body)


def test_payloads_are_json_text_or_raw_bytes() -> None:
    scenario = parse_scenario({"two_phase": {"operation": "x", "payload": {"b": 1, "a": "é"},
                                             "refused_payload_base64": "AAE="}})
    assert scenario.two_phase is not None
    assert json.loads(scenario.two_phase.payload) == {"a": "é", "b": 1}  # compact, sorted keys
    assert scenario.two_phase.refused_payload == b"\x00\x01"
    assert scenario.branch == "conformance"
