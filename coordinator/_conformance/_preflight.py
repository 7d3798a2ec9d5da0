"""Before any case: is the participant there, and can the scenario's ``observe`` read it?

Both are checked with nothing but reads (the connection, then each ``observe`` operation),
so a scenario with a typo or a service that is down is reported once, before any case
debits or commits anything.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..client._participant import ParticipantClient
from ._driver import UNREACHABLE_S, Driver, NoSuchField, Violation
from ._scenario import Observe, Scenario, ScenarioError


class Unreachable(Exception):
    """The participant could not be reached: no case was run."""


async def preflight(client: ParticipantClient, driver: Driver, scenario: Scenario,
                    protocols: Iterable[str]) -> None:
    """Raises Unreachable, or ScenarioError naming the scenario's field that the service
    does not bear out; ``protocols``: the scenario sections whose cases will run."""
    if not await client.reachable(UNREACHABLE_S):
        raise Unreachable(f"{client.address} is unreachable (no connection within "
                          f"{UNREACHABLE_S:g} s): check the address, the TLS options and that "
                          "the service is running")
    for section in dict.fromkeys(protocols):
        spec = scenario.section(section)
        if spec is not None and spec.observe is not None:
            await _observable(client.address, driver, spec.observe, f"{section}.observe")


async def _observable(address: str, driver: Driver, obs: Observe, where: str) -> None:
    try:
        await driver.observe(obs)
    except Violation as v:
        if v.unreachable:
            raise Unreachable(f"{address} is unreachable: {v.got}") from None
        name = f"{where}.field" if isinstance(v, NoSuchField) else f"{where}.operation"
        raise ScenarioError(f"{name}: the service does not bear it out: expected {v.expected}; "
                            f"got {v.got}") from None
