"""What the cases assert: answers, repeats and observed effects, each failure with its cost."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ._driver import Answer, Driver, Violation
from ._scenario import Observe

SCENARIO_PROBLEM = ("the checker needs this to go through: fix the scenario's operation or "
                    "payload, or the service")


def expect_ok(answer: Answer, what: str, impact: str = SCENARIO_PROBLEM) -> None:
    if not answer.ok:
        raise Violation(f"OK from {what}", str(answer), impact)


def expect_failed(answer: Answer, what: str, impact: str) -> None:
    if answer.ok:
        raise Violation(f"FAILED from {what}", str(answer), impact)


def expect_same(first: Answer, again: Answer, what: str, impact: str) -> None:
    if not again.same_as(first):
        raise Violation(f"{what}: the first answer again ({first})", str(again), impact)


@dataclass
class Effects:
    """Snapshots of the scenario's observe operation; no-ops (with a note) without one."""

    driver: Driver
    observe: Observe | None
    notes: list[str] = field(default_factory=list)

    async def snapshot(self) -> bytes | None:
        if self.observe is None:
            note = "effects not observed (the scenario has no 'observe'): replies checked only"
            if note not in self.notes:
                self.notes.append(note)
            return None
        return await self.driver.observe(self.observe)

    async def unchanged(self, before: bytes | None, when: str, impact: str) -> None:
        if before is None:
            return
        now = await self.driver.observe(self.observe)  # type: ignore[arg-type]
        if now != before:
            raise Violation(f"the observed state unchanged {when} ({before!r})", repr(now), impact)

    async def changed(self, before: bytes | None, when: str, impact: str) -> bytes | None:
        """The state now, which must differ from ``before``: the action's effect shows."""
        if before is None:
            return None
        now = await self.driver.observe(self.observe)  # type: ignore[arg-type]
        if now == before:
            raise Violation(f"the observed state changed {when}", f"still {now!r}", impact)
        return now

    async def one_more(self, base: bytes | None, reference: tuple[bytes, bytes] | None,
                       when: str, impact: str) -> None:
        """The state moved from ``base`` by exactly what one application did in
        ``reference`` (before, after) — checkable when the observation is a number."""
        if base is None or reference is None:
            return
        numbers = [_number(v) for v in (*reference, base)]
        now = await self.driver.observe(self.observe)  # type: ignore[arg-type]
        step, now_n = _delta(numbers), _number(now)
        if step is None or now_n is None or numbers[2] is None:
            self.notes.append("applied-once not checked exactly: the observation is not a number")
            return
        expected = numbers[2] + step
        if now_n != expected:
            raise Violation(f"the observed state {expected:g} {when} (one application: {step:+g})",
                            f"{now_n:g}", impact)


def _delta(numbers: list[float | None]) -> float | None:
    before, after = numbers[0], numbers[1]
    return None if before is None or after is None else after - before


def _number(value: bytes) -> float | None:
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if isinstance(parsed, bool) or not isinstance(parsed, int | float):
        return None
    return float(parsed)
