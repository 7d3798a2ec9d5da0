"""Every limit in ``Limits``, and every pattern, on both sides of its boundary."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest

from coordinator.domain.addresses import AllowList, valid_address
from coordinator.domain.errors import InvalidArgument
from coordinator.domain.records import BranchPlan, Protocol, RetryPolicy
from coordinator.domain.validation import (
    Limits,
    check_gid,
    check_labels,
    check_plan,
    check_reason,
    check_timeout,
)

L = Limits()


def branch(name: str = "a", **kw: object) -> BranchPlan:
    fields: dict[str, object] = {"participant": "127.0.0.1:5000", "action": "x.do"} | kw
    return BranchPlan(name=name, **fields)  # type: ignore[arg-type]


def plan_of(*branches: BranchPlan, concurrent: bool = False) -> None:
    check_plan(tuple(branches), Protocol.SAGA, concurrent, L, AllowList())


def names(n: int) -> list[BranchPlan]:
    return [branch(f"b{i}") for i in range(n)]


def retry(**kw: float) -> BranchPlan:
    return branch(retry=replace(RetryPolicy(), **kw))  # type: ignore[arg-type]


# (what, a check at the limit, the same check one step past it, the field named)
BOUNDARIES: list[tuple[str, Callable[[], None], Callable[[], None], str]] = [
    ("max_branches", lambda: plan_of(*names(L.max_branches)),
     lambda: plan_of(*names(L.max_branches + 1)), "branches"),
    ("max_payload_bytes", lambda: plan_of(branch(payload=b"x" * L.max_payload_bytes)),
     lambda: plan_of(branch(payload=b"x" * (L.max_payload_bytes + 1))), "branches[0].payload"),
    ("max_total_payload_bytes",
     lambda: plan_of(*[branch(f"b{i}", payload=b"x" * (L.max_total_payload_bytes // 4))
                       for i in range(4)]),
     lambda: plan_of(*[branch(f"b{i}", payload=b"x" * (L.max_total_payload_bytes // 4))
                       for i in range(4)], branch("z", payload=b"x")), "branches"),
    ("max_labels", lambda: check_labels({str(i): "v" for i in range(L.max_labels)}, L),
     lambda: check_labels({str(i): "v" for i in range(L.max_labels + 1)}, L), "labels"),
    ("max_label_bytes (key)", lambda: check_labels({"k" * L.max_label_bytes: "v"}, L),
     lambda: check_labels({"k" * (L.max_label_bytes + 1): "v"}, L), "labels["),
    ("max_label_bytes (value)", lambda: check_labels({"k": "é" * (L.max_label_bytes // 2)}, L),
     lambda: check_labels({"k": "é" * (L.max_label_bytes // 2) + "e"}, L), "labels["),
    ("max_timeout_s", lambda: check_timeout(L.max_timeout_s, L),
     lambda: check_timeout(math.nextafter(L.max_timeout_s, math.inf), L), "timeout"),
    ("max_attempt_timeout_s", lambda: plan_of(branch(timeout_s=L.max_attempt_timeout_s)),
     lambda: plan_of(branch(timeout_s=L.max_attempt_timeout_s + 0.001)), "branches[0].timeout"),
    ("max_backoff_s", lambda: plan_of(retry(initial_backoff_s=1, max_backoff_s=L.max_backoff_s)),
     lambda: plan_of(retry(initial_backoff_s=1, max_backoff_s=L.max_backoff_s + 1)),
     "branches[0].retry.max_backoff"),
    ("max_multiplier", lambda: plan_of(retry(multiplier=L.max_multiplier)),
     lambda: plan_of(retry(multiplier=L.max_multiplier + 0.5)), "branches[0].retry.multiplier"),
    ("multiplier >= 1", lambda: plan_of(retry(multiplier=1.0)),
     lambda: plan_of(retry(multiplier=0.999)), "branches[0].retry.multiplier"),
    ("max_operation_len", lambda: plan_of(branch(action="a" * L.max_operation_len)),
     lambda: plan_of(branch(action="a" * (L.max_operation_len + 1))), "branches[0].action"),
    ("max_reason_bytes", lambda: check_reason("r" * L.max_reason_bytes, L),
     lambda: check_reason("r" * (L.max_reason_bytes + 1), L), "reason"),
    ("gid length", lambda: check_gid("g" * 128), lambda: check_gid("g" * 129), "gid"),
    ("branch name length", lambda: plan_of(branch("n" * 128)),
     lambda: plan_of(branch("n" * 129)), "branches[0].name"),
]


@pytest.mark.parametrize(("what", "at", "past", "field"), BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
def test_each_limit_holds_at_its_boundary_and_refuses_past_it(
        what: str, at: Callable[[], None], past: Callable[[], None], field: str) -> None:
    at()
    with pytest.raises(InvalidArgument) as err:
        past()
    assert err.value.field.startswith(field), err.value


@pytest.mark.parametrize("gid", ["abc\n", "\nabc", "a" * 128 + "\n", "ab c", "a/b", "ab\x00",
                                 "\uff41\uff42\uff43", ""])
def test_names_are_full_ascii_matches(gid: str) -> None:
    with pytest.raises(InvalidArgument):
        check_gid(gid)
    with pytest.raises(InvalidArgument) as err:
        plan_of(branch(gid or "x", participant="127.0.0.1:1") if gid else branch(""))
    assert err.value.field == "branches[0].name"


@pytest.mark.parametrize(("address", "ok"), [
    ("127.0.0.1:49335", True), ("svc.local:1", True), ("[::1]:65535", True),
    ("127.0.0.1:٤٩٣٣٥", False), ("127.0.0.1:49335\n", False), ("127.0.0.1:0", False),
    ("127.0.0.1:65536", False), ("host", False), (" host:1", False), ("host:\uff11", False),
])
def test_addresses_are_ascii_host_and_port(address: str, ok: bool) -> None:
    assert valid_address(address) is ok


@pytest.mark.parametrize(("policy", "field"), [
    ({"multiplier": math.nan}, "multiplier"), ({"multiplier": math.inf}, "multiplier"),
    ({"initial_backoff_s": math.nan}, "initial_backoff"), ({"max_backoff_s": math.inf}, "max_backoff"),
    ({"initial_backoff_s": -1.0}, "initial_backoff"),
    ({"initial_backoff_s": 5.0, "max_backoff_s": 1.0}, "max_backoff"),
])
def test_retry_numbers_must_be_finite_and_ordered(policy: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        plan_of(retry(**policy))
    assert err.value.field == f"branches[0].retry.{field}"


def test_timeouts_must_be_finite_and_positive() -> None:
    for bad in (math.nan, math.inf, 0.0, -1.0):
        with pytest.raises(InvalidArgument):
            check_timeout(bad, L)
        with pytest.raises(InvalidArgument):
            plan_of(branch(timeout_s=bad))


def test_after_lists_hold_each_branch_once() -> None:
    plan_of(branch("a"), branch("b", after=("a",)), concurrent=True)
    with pytest.raises(InvalidArgument, match="more than once") as err:
        plan_of(branch("a"), branch("b", after=("a",) * 400_000), concurrent=True)
    assert err.value.field == "branches[1].after"


def test_control_characters_are_refused_in_operations_labels_and_reasons() -> None:
    for bad in (lambda: plan_of(branch(action="x\n")), lambda: check_labels({"k": "v\x1b"}, L),
                lambda: check_reason("fixed\x00", L)):
        with pytest.raises(InvalidArgument):
            bad()
    check_reason("fixed by hand,\nsee ticket 42", L)
