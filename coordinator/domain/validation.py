"""What a request may ask for, checked before anything is written. Errors name the field.

``Limits`` is the one table of limits; coordinator.proto documents the defaults next to
each field. Patterns are full matches over ASCII only (a trailing newline or a non-ASCII
digit is not a name or a port); every number must be finite.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ._common import MAX_ERROR_CHARS, MAX_HISTORY
from .addresses import AllowList, valid_address
from .errors import InvalidArgument
from .records import BranchPlan, NotifyPlan, Protocol, RetryPolicy

_NAME = re.compile(r"[A-Za-z0-9._:@-]{1,128}", re.ASCII)  # no '/': it separates key parts
_NAME_RULE = "must be 1-128 characters of A-Z a-z 0-9 . _ : @ -"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request may ask for (and on what a record may grow to)."""

    max_branches: int = 64
    max_payload_bytes: int = 256 * 1024
    """Per branch."""
    max_total_payload_bytes: int = 1024 * 1024
    """All branches of one transaction together."""
    max_labels: int = 32
    max_label_bytes: int = 256
    """Per key and per value (UTF-8)."""
    max_timeout_s: float = 7 * 24 * 3600.0
    """The transaction's timeout (saga forward deadline, 2PC prepare deadline)."""
    max_attempt_timeout_s: float = 600.0
    """A branch's per-attempt timeout."""
    max_backoff_s: float = 3600.0
    """A retry policy's initial and maximum backoff."""
    max_multiplier: float = 100.0
    """A retry policy's backoff multiplier (at least 1)."""
    max_operation_len: int = 256
    """An action or compensation name (characters, no control characters)."""
    max_reason_bytes: int = 1024
    """An operator action's reason (UTF-8)."""
    max_result_bytes: int = 64 * 1024
    """A participant's BranchReply.result; a larger one is a misconfigured participant."""
    max_total_result_bytes: int = 256 * 1024
    """Results of all branches of one transaction together."""
    max_page_size: int = 500
    """ListTransactions.page_size."""
    max_active: int = 20_000
    """Transactions one coordinator drives at once. Past it, new ones are refused before
    anything is written: a coordinator that takes everything in a storm drives nothing
    well, and its lease keep-alive starves on the same event loop."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, not {getattr(self, name)}")
        if self.max_multiplier < 1:
            raise ValueError(f"max_multiplier: must be at least 1, not {self.max_multiplier}")


def growth_bytes(branches: int, limits: Limits) -> int:
    """The most a record's stored state can grow by after its start (JSON, ASCII-escaped):
    results (base64), one clipped error per branch, the record's own and its notice's, a
    full history."""
    results = limits.max_total_result_bytes * 4 // 3 + 4 * branches
    errors = (branches + 2) * (MAX_ERROR_CHARS * 6 + 64)
    history = MAX_HISTORY * (limits.max_reason_bytes * 3 + 512)
    return results + errors + history


def check_gid(gid: str, field: str = "gid") -> None:
    if not _NAME.fullmatch(gid):
        raise InvalidArgument(field, _NAME_RULE)


def check_timeout(timeout_s: float, limits: Limits, field: str = "timeout") -> None:
    if not (math.isfinite(timeout_s) and 0 < timeout_s <= limits.max_timeout_s):
        raise InvalidArgument(field, f"must be in (0, {limits.max_timeout_s:g}] s")


def check_labels(labels: dict[str, str], limits: Limits) -> None:
    if len(labels) > limits.max_labels:
        raise InvalidArgument("labels", f"at most {limits.max_labels} labels")
    for key, value in labels.items():
        if not key or len(key.encode()) > limits.max_label_bytes or _CONTROL.search(key):
            raise InvalidArgument(f"labels[{key!r}]", f"key must be 1-{limits.max_label_bytes} "
                                  "bytes without control characters")
        if len(value.encode()) > limits.max_label_bytes or _CONTROL.search(value):
            raise InvalidArgument(f"labels[{key!r}]", f"value must be at most "
                                  f"{limits.max_label_bytes} bytes without control characters")


def check_reason(reason: str, limits: Limits) -> None:
    if not reason.strip():
        raise InvalidArgument("reason", "is required for operator actions (it goes in the history)")
    if len(reason.encode()) > limits.max_reason_bytes:
        raise InvalidArgument("reason", f"longer than {limits.max_reason_bytes} bytes")
    if _CONTROL.search(reason.replace("\n", " ").replace("\t", " ")):
        raise InvalidArgument("reason", "must not hold control characters (newlines and tabs are fine)")


def check_start(
    gid: str,
    protocol: Protocol,
    plan: tuple[BranchPlan, ...],
    timeout_s: float,
    concurrent: bool,
    labels: dict[str, str],
    limits: Limits,
    allow: AllowList,
    notify: NotifyPlan | None = None,
) -> None:
    """Every rule a start must meet before anything is written (``gid`` "" means the
    coordinator names it). The coordinator and the participant SDK's outbox both call it."""
    if gid:
        check_gid(gid)
    check_timeout(timeout_s, limits)
    check_plan(plan, protocol, concurrent, limits, allow)
    check_labels(labels, limits)
    if notify is not None:
        check_notify(notify, limits, allow)


def check_notify(n: NotifyPlan, limits: Limits, allow: AllowList) -> None:
    """A notify target: an address allowed as a branch's would be, an operation, and a
    budget within the longest transaction timeout."""
    _check_address(n.participant, "notify.participant", allow)
    _check_operation(n.operation, "notify.operation", limits, required=True)
    if not (math.isfinite(n.budget_s) and 0 < n.budget_s <= limits.max_timeout_s):
        raise InvalidArgument("notify.budget", f"must be in (0, {limits.max_timeout_s:g}] s")
    if not (math.isfinite(n.timeout_s) and 0 < n.timeout_s <= limits.max_attempt_timeout_s):
        raise InvalidArgument("notify.timeout", f"must be in (0, {limits.max_attempt_timeout_s:g}] s")
    _check_retry(n.retry, "notify.retry", limits)


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
    for i, branch in enumerate(plan):
        _check_branch(branch, f"branches[{i}]", protocol, limits, allow)
        if branch.name in names:
            raise InvalidArgument(f"branches[{i}].name", f"duplicate branch name {branch.name!r}")
        names.add(branch.name)
    total = sum(len(b.payload) for b in plan)
    if total > limits.max_total_payload_bytes:
        raise InvalidArgument("branches", f"payloads exceed {limits.max_total_payload_bytes} bytes")
    _check_after(plan, concurrent, names)


def _check_branch(
    b: BranchPlan, field: str, protocol: Protocol, limits: Limits, allow: AllowList
) -> None:
    if not _NAME.fullmatch(b.name):
        raise InvalidArgument(f"{field}.name", "is required" if not b.name else _NAME_RULE)
    _check_address(b.participant, f"{field}.participant", allow)
    _check_operation(b.action, f"{field}.action", limits, required=True)
    _check_operation(b.compensation, f"{field}.compensation", limits, required=False)
    if protocol is Protocol.TWO_PHASE and b.compensation:
        raise InvalidArgument(f"{field}.compensation", "2PC branches have no compensation")
    if protocol is Protocol.TWO_PHASE and b.after:
        raise InvalidArgument(f"{field}.after", "2PC branches have no ordering")
    if len(b.payload) > limits.max_payload_bytes:
        raise InvalidArgument(f"{field}.payload", f"larger than {limits.max_payload_bytes} bytes")
    if not (math.isfinite(b.timeout_s) and 0 < b.timeout_s <= limits.max_attempt_timeout_s):
        raise InvalidArgument(f"{field}.timeout",
                              f"must be in (0, {limits.max_attempt_timeout_s:g}] s")
    _check_retry(b.retry, f"{field}.retry", limits)
    _check_retry(b.compensation_retry, f"{field}.compensation_retry", limits)


def _check_address(address: str, field: str, allow: AllowList) -> None:
    if not address:
        raise InvalidArgument(field, "is required (host:port)")
    if not valid_address(address):
        raise InvalidArgument(field, f"{address!r} is not host:port")
    if not allow.allows(address):
        raise InvalidArgument(field, f"{address!r} is not allowed")


def _check_operation(name: str, field: str, limits: Limits, *, required: bool) -> None:
    if required and not name:
        raise InvalidArgument(field, "is required")
    if len(name) > limits.max_operation_len or _CONTROL.search(name):
        raise InvalidArgument(field, f"must be at most {limits.max_operation_len} "
                              "characters without control characters")


def _check_retry(r: RetryPolicy, field: str, limits: Limits) -> None:
    for name, value in (("initial_backoff", r.initial_backoff_s), ("max_backoff", r.max_backoff_s)):
        if not (math.isfinite(value) and 0 <= value <= limits.max_backoff_s):
            raise InvalidArgument(f"{field}.{name}", f"must be in [0, {limits.max_backoff_s:g}] s")
    if r.max_backoff_s < r.initial_backoff_s:
        raise InvalidArgument(f"{field}.max_backoff", "must not be less than initial_backoff")
    if not (math.isfinite(r.multiplier) and 1 <= r.multiplier <= limits.max_multiplier):
        raise InvalidArgument(f"{field}.multiplier", f"must be in [1, {limits.max_multiplier:g}]")


def _check_after(plan: tuple[BranchPlan, ...], concurrent: bool, names: set[str]) -> None:
    for i, b in enumerate(plan):
        if b.after and not concurrent:
            raise InvalidArgument(f"branches[{i}].after", "only allowed with concurrent=true")
        if len(set(b.after)) != len(b.after):
            raise InvalidArgument(f"branches[{i}].after", "names a branch more than once")
        for dep in b.after:
            if dep not in names:
                raise InvalidArgument(f"branches[{i}].after", f"unknown branch {dep[:128]!r}")
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
