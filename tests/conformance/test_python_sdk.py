"""The Python SDK's documented accounts service (docs/participant.md), with the 2PC debit
of its section 7 and a balance to observe, conforms: every case passes, run after run."""

from __future__ import annotations

import pytest

from coordinator._conformance import check, parse_scenario
from tests.support import databases

from .conftest import balance, new_account, scenario

pytestmark = pytest.mark.integration


async def test_the_python_sdk_example_conforms(pg: databases.Db, python_service: str) -> None:
    saga, two_phase = await new_account(pg), await new_account(pg)
    report = await check(python_service, parse_scenario(scenario(saga, two_phase, notify=True)))
    assert report.passed, report.to_text()
    assert {c.status for c in report.cases} == {"pass"}, report.to_text()
    assert not any(c.notes for c in report.cases), report.to_text()  # every effect was checked
    again = await check(python_service, parse_scenario(scenario(saga, two_phase, notify=True)))  # fresh gids
    assert again.passed, again.to_text()
    # Every debit the cases made was undone or committed once: 6 committed 2PC debits per run.
    assert (await balance(pg, saga), await balance(pg, two_phase)) == (1_000, 1_000 - 2 * 6)
