"""Plan rules checked before anything is written. Errors name the offending field."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .addresses import AllowList, valid_address
from .errors import InvalidArgument
from .records import BranchPlan, Protocol

_NAME = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")  # no '/': it separates idempotency-key parts


@dataclass(frozen=True, slots=True)
class Limits:
    max_branches: int = 64
    max_payload_bytes: int = 256 * 1024
    max_total_payload_bytes: int = 1024 * 1024
    max_labels: int = 32
    max_label_bytes: int = 256
    max_timeout_s: float = 7 * 24 * 3600.0
    max_attempt_timeout_s: float = 600.0
    max_operation_len: int = 256
    # Transactions one coordinator drives at once. Past it, new ones are refused before
    # anything is written: a coordinator that takes everything in a storm drives nothing
    # well, and its lease keep-alive starves on the same event loop.
    max_active: int = 20_000


def check_gid(gid: str, field: str = "gid") -> None:
    if not _NAME.match(gid):
        raise InvalidArgument(field, "must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")


def check_labels(labels: dict[str, str], limits: Limits) -> None:
    if len(labels) > limits.max_labels:
        raise InvalidArgument("labels", f"at most {limits.max_labels} labels")
    for key, value in labels.items():
        if not key or len(key.encode()) > limits.max_label_bytes:
            raise InvalidArgument(f"labels[{key!r}]", "key must be 1-256 bytes")
        if len(value.encode()) > limits.max_label_bytes:
            raise InvalidArgument(f"labels[{key!r}]", "value longer than 256 bytes")


def check_plan(
    plan: tuple[BranchPlan, ...],
    protocol: Protocol,
    concurrent: bool,
    limits: Limits,
    allow: AllowList,
) -> None:
    if not plan:
        raise InvalidArgument("branches", "at least one branch is required")
    if len(plan) > limits.max_branches:
        raise InvalidArgument("branches", f"at most {limits.max_branches} branches")
    names: set[str] = set()
    total = 0
    for i, branch in enumerate(plan):
        _check_branch(branch, f"branches[{i}]", protocol, limits, allow)
        if branch.name in names:
            raise InvalidArgument(f"branches[{i}].name", f"duplicate branch name {branch.name!r}")
        names.add(branch.name)
        total += len(branch.payload)
    if total > limits.max_total_payload_bytes:
        raise InvalidArgument("branches", f"payloads exceed {limits.max_total_payload_bytes} bytes")
    _check_after(plan, concurrent, names)


def _check_branch(
    b: BranchPlan, field: str, protocol: Protocol, limits: Limits, allow: AllowList
) -> None:
    if not b.name:
        raise InvalidArgument(f"{field}.name", "is required")
    if not _NAME.match(b.name):
        raise InvalidArgument(f"{field}.name", "must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    if not b.participant:
        raise InvalidArgument(f"{field}.participant", "is required (host:port)")
    if not valid_address(b.participant):
        raise InvalidArgument(f"{field}.participant", f"{b.participant!r} is not host:port")
    if not allow.allows(b.participant):
        raise InvalidArgument(f"{field}.participant", f"{b.participant!r} is not allowed")
    if not b.action:
        raise InvalidArgument(f"{field}.action", "is required")
    for name, op in (("action", b.action), ("compensation", b.compensation)):
        if len(op) > limits.max_operation_len:
            raise InvalidArgument(f"{field}.{name}", f"longer than {limits.max_operation_len}")
    if protocol is Protocol.TWO_PHASE and b.compensation:
        raise InvalidArgument(f"{field}.compensation", "2PC branches have no compensation")
    if protocol is Protocol.TWO_PHASE and b.after:
        raise InvalidArgument(f"{field}.after", "2PC branches have no ordering")
    if len(b.payload) > limits.max_payload_bytes:
        raise InvalidArgument(f"{field}.payload", f"larger than {limits.max_payload_bytes} bytes")
    if not 0 < b.timeout_s <= limits.max_attempt_timeout_s:
        raise InvalidArgument(f"{field}.timeout", f"must be in (0, {limits.max_attempt_timeout_s}] s")
    r = b.retry
    if r.initial_backoff_s < 0 or r.max_backoff_s < r.initial_backoff_s or r.multiplier < 1:
        raise InvalidArgument(f"{field}.retry", "needs 0 <= initial_backoff <= max_backoff, "
                              "multiplier >= 1")


def _check_after(plan: tuple[BranchPlan, ...], concurrent: bool, names: set[str]) -> None:
    for i, b in enumerate(plan):
        if b.after and not concurrent:
            raise InvalidArgument(f"branches[{i}].after", "only allowed with concurrent=true")
        for dep in b.after:
            if dep not in names:
                raise InvalidArgument(f"branches[{i}].after", f"unknown branch {dep!r}")
            if dep == b.name:
                raise InvalidArgument(f"branches[{i}].after", "a branch cannot follow itself")
    cycle = _find_cycle({b.name: b.after for b in plan})
    if cycle:
        raise InvalidArgument("branches.after", f"cycle: {' -> '.join(cycle)}")


def _find_cycle(graph: dict[str, tuple[str, ...]]) -> list[str]:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str]:
        if node in visiting:
            return [*visiting[visiting.index(node):], node]
        if node in done:
            return []
        visiting.append(node)
        for nxt in graph[node]:
            found = visit(nxt)
            if found:
                return found
        visiting.pop()
        done.add(node)
        return []

    for start in graph:
        found = visit(start)
        if found:
            return found
    return []
