"""The checker against an in-memory participant: passes when it follows the contract, and
names the right case when one rule is broken."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from coordinator._conformance import Report, check, parse_scenario

from ._memory import SCENARIO, Accounts, Breaks, serve

Checker = Callable[[Breaks], "AsyncIterator[Report]"]


async def run_check(breaks: Breaks) -> tuple[Report, Accounts]:
    accounts = Accounts(breaks)
    server, address = await serve(accounts)
    try:
        return await check(address, parse_scenario(SCENARIO), timeout_s=2.0), accounts
    finally:
        await server.stop(0)


def failed(report: Report) -> dict[str, str]:
    return {c.name: c.impact for c in report.cases if c.status == "fail"}


async def test_a_conforming_participant_passes_every_case() -> None:
    report, accounts = await run_check(Breaks())
    assert failed(report) == {}, report.to_text()
    assert [c.status for c in report.cases] == ["pass"] * len(report.cases)
    assert not accounts.prepared  # every prepared branch was finished


@pytest.mark.parametrize(("breaks", "case", "impact"), [
    (Breaks(idempotency=True), "saga.duplicate_execute", "money debited twice"),
    (Breaks(null_compensation=True), "saga.null_compensation", "never debited"),
    (Breaks(hanging_guard=True), "saga.hanging_execute", "never refunded"),
    (Breaks(commit_idempotency=True), "2pc.commit_twice", "debited twice"),
    (Breaks(compensate_claim=True), "saga.concurrent_twins", "money refunded twice"),
    (Breaks(late_hanging_guard=True), "saga.racing_compensate", "never refunded"),
    (Breaks(notice_idempotency=True), "notify.once", "acts twice on one settlement"),
])
async def test_a_broken_rule_fails_its_case(breaks: Breaks, case: str, impact: str) -> None:
    report, _ = await run_check(breaks)
    assert not report.passed
    assert case in failed(report), report.to_text()
    assert impact in failed(report)[case]
    text = report.to_text()
    assert f"FAIL  {case}" in text and "expected:" in text and "means:" in text
