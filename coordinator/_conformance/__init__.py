"""``txc participant check``: drives a running participant through the protocol's hard cases
(duplicates, null compensation, hanging requests, concurrent twins, 2PC votes and phase 2)
and says, per case, what was expected, what came back and what it costs the service's users.

The catalogue is in :mod:`._cases`; the scenario file format in :mod:`._scenario`;
docs/participants.md is the contract the cases check.
"""

from __future__ import annotations

from ._cases import CASES, Case
from ._preflight import Unreachable
from ._report import CaseResult, Report
from ._runner import check
from ._scenario import Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = ["CASES", "Case", "CaseResult", "Report", "Scenario", "ScenarioError", "Unreachable", "check",
           "load_scenario", "parse_scenario"]
