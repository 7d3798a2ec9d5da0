"""Was the client served? Each transfer's answer against the one the business would have
given with no faults at all. Pure, like the checker.

- **served**: answered within the client's timeout with the business' own answer: ``ok``
  when the business would have taken the transfer, or its refusal ("insufficient funds",
  "out of stock") when it would have refused it;
- **refused** (by the business): the served transfers told ``failed`` with that refusal.
  The workload asks for these; they are not a fault's doing;
- **failed by the fault**: told ``failed`` for any other reason: a coordinator or a
  participant at capacity, a deadline that passed, a participant that could not be
  reached or gave no answer, a 2PC prepare that found its rows locked by a branch waiting
  for phase 2. Nothing happened, but the business would have served it;
- **unknown**: no answer within the timeout, or an answer that does not say how it ended;
- **wrong**: an answer that is not the business' (``ok`` for a transfer it would have
  refused, a refusal it would not have given). Never expected: the checker's invariants
  say what such a transfer did to the databases.

Served + failed by the fault + unknown + wrong = issued.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .workload.services import REFUSALS, Transfer, funds_refusal, stock_refusal

Verdict = Literal["ok", "refused", "fault", "unknown", "wrong"]
Cause = Literal["capacity", "locked", "deadline", "unreachable", "other"]
OK = "ok"
"""The business answer of a transfer it takes (otherwise the answer is its refusal)."""

# What a failed or unknown answer's detail says, first match wins (lower case).
_CAUSES: tuple[tuple[Cause, tuple[str, ...]], ...] = (
    ("capacity", ("capacity", "resource_exhausted", "overloaded", "busy")),
    ("locked", ("rows locked", "lock wait")),  # a 2PC prepare behind a prepared branch's locks
    ("deadline", ("deadline", "gave no answer", "no answer in time", "timed out", "timeout")),
    ("unreachable", ("unavailable", "unreachable", "connect", "refused the connection")),
)


def business_answers(plan: Sequence[Transfer], balances: Mapping[str, int]) -> dict[str, str]:
    """Per transfer id: ``ok``, or the refusal the business gives it, when the plan runs in
    order with no faults from these opening balances (the services' own rules)."""
    left = dict(balances)
    answers: dict[str, str] = {}
    for t in plan:
        refused = funds_refusal(left.get(t.account), t.amount) or stock_refusal(t.amount)
        answers[t.transfer_id] = refused or OK
        if refused is None:
            left[t.account] -= t.amount
    return answers


def refusal_in(detail: str) -> str | None:
    """The business refusal a failure's detail names, if any."""
    text = detail.lower()
    return next((r for r in REFUSALS if r in text), None)


def verdict(told: str, detail: str, expected: str) -> Verdict:
    """One transfer: ``told`` ok / failed / unknown with its ``detail``, against the
    business answer ``expected`` (``ok`` or a refusal)."""
    if told == "unknown":
        return "unknown"
    if told == "ok":
        return "ok" if expected == OK else "wrong"
    refused = refusal_in(detail)
    if refused is None:
        return "fault"
    return "refused" if refused == expected else "wrong"


def cause(detail: str) -> Cause:
    """Why a transfer was not served, from its detail (a gRPC status name, the
    transaction's error, the client's own words)."""
    text = detail.lower()
    return next((name for name, words in _CAUSES if any(w in text for w in words)), "other")


@dataclass(frozen=True)
class Serving:
    """One mode's transfers by verdict; ``causes``: the failed-by-the-fault and unknown
    ones by what their detail says (``failed: deadline``, ``unknown: unreachable``)."""

    issued: int
    ok: int
    refused: int
    failed_by_fault: int
    unknown: int
    wrong: int
    causes: Mapping[str, int] = field(default_factory=dict)

    @property
    def served(self) -> int:
        return self.ok + self.refused

    def share(self, count: int) -> float | None:
        return count / self.issued if self.issued else None

    def to_dict(self) -> dict[str, Any]:
        """The keys summary.json gets (``served_fraction`` etc.: of the issued)."""
        return {"served": self.served, "served_ok": self.ok, "refused": self.refused,
                "failed_by_fault": self.failed_by_fault, "wrong": self.wrong,
                "not_served_causes": dict(self.causes),
                "served_fraction": self.share(self.served),
                "unknown_fraction": self.share(self.unknown),
                "failed_by_fault_fraction": self.share(self.failed_by_fault)}


@dataclass(frozen=True)
class Answer:
    """What ``tally`` needs of a transfer: what it was told, and why."""

    transfer_id: str
    told: str
    detail: str


def tally(answers: Iterable[Answer], expected: Mapping[str, str]) -> Serving:
    """Count verdicts; a transfer missing from ``expected`` is taken as one the business
    would have served with ``ok``."""
    verdicts: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    for a in answers:
        v = verdict(a.told, a.detail, expected.get(a.transfer_id, OK))
        verdicts[v] += 1
        if v in ("fault", "unknown"):
            causes[f"{'failed' if v == 'fault' else v}: {cause(a.detail)}"] += 1
    return Serving(issued=sum(verdicts.values()), ok=verdicts["ok"], refused=verdicts["refused"],
                   failed_by_fault=verdicts["fault"], unknown=verdicts["unknown"],
                   wrong=verdicts["wrong"], causes=dict(sorted(causes.items())))
