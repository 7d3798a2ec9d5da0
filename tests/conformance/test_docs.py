"""docs/participants.md, section 9, against the checker: the cases its table lists are the
cases the checker runs, and its scenario example is one the checker takes, with an account
of its own per section."""

from __future__ import annotations

import json
import re
from pathlib import Path

from coordinator._conformance import CASES, parse_scenario

DOC = Path(__file__).resolve().parents[2] / "docs" / "participants.md"


def section_9() -> str:
    text = DOC.read_text()
    return text[text.index("## 9."):text.index("## 10.")]


def test_the_table_lists_every_case_the_checker_runs() -> None:
    listed = re.findall(r"^\| `((?:saga|2pc|notify)\.\w+)` \|", section_9(), flags=re.MULTILINE)
    assert listed == [case.name for case in CASES]


def test_the_scenario_example_parses_with_one_account_per_section() -> None:
    block = re.search(r"```json\n(.*?)```", section_9(), flags=re.DOTALL)
    assert block is not None
    body = json.loads(block.group(1))
    scenario = parse_scenario(body)
    assert scenario.saga is not None and scenario.two_phase is not None
    saga, two_phase = body["saga"], body["two_phase"]
    accounts = {saga["payload"]["account"], saga["observe"]["payload"]["account"]}
    assert len(accounts) == 1
    assert accounts.isdisjoint({two_phase["payload"]["account"],
                                two_phase["observe"]["payload"]["account"]})
