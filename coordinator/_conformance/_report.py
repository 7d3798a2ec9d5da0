"""Verdicts per case, and the report as text (people) or JSON (CI)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(frozen=True)
class CaseResult:
    name: str
    checks: str
    status: str  # pass | fail | skip
    seconds: float = 0.0
    expected: str = ""
    got: str = ""
    impact: str = ""
    reason: str = ""  # why skipped
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    participant: str
    run_id: str
    cases: list[CaseResult]

    @property
    def passed(self) -> bool:
        return not any(c.status == FAIL for c in self.cases)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.cases) for s in (PASS, FAIL, SKIP)}

    def to_json(self) -> str:
        body = {"participant": self.participant, "run_id": self.run_id, "passed": self.passed,
                **self.counts(), "cases": [asdict(c) for c in self.cases]}
        return json.dumps(body, indent=2)

    def to_text(self) -> str:
        lines = [f"txc participant check {self.participant} (run {self.run_id})"]
        for case in self.cases:
            lines.extend(_case_lines(case))
        c = self.counts()
        verdict = "CONFORMS" if self.passed else "DOES NOT CONFORM"
        lines.append(f"{verdict}: {c[PASS]} passed, {c[FAIL]} failed, {c[SKIP]} skipped")
        return "\n".join(lines)


def _case_lines(case: CaseResult) -> list[str]:
    head = f"{case.status.upper():4}  {case.name:26} {case.checks}"
    if case.status == SKIP:
        return [f"{head}\n        skipped: {case.reason}"]
    lines = [head if case.status == PASS else f"{head}  ({case.seconds:.2f} s)"]
    if case.status == FAIL:
        lines += [f"        expected: {case.expected}", f"        got:      {case.got}",
                  f"        means:    {case.impact}"]
    lines += [f"        note: {note}" for note in case.notes]
    return lines
