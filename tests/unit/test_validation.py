"""Plan validation: each bad plan is refused with the offending field named."""

from __future__ import annotations

import pytest

from coordinator.domain.addresses import AllowList
from coordinator.domain.errors import InvalidArgument
from coordinator.domain.records import BranchPlan, Protocol
from coordinator.domain.validation import Limits, check_gid, check_labels, check_plan


def b(name: str = "a", **kw: object) -> BranchPlan:
    fields: dict[str, object] = {"participant": "127.0.0.1:5000", "action": "x.do"} | kw
    return BranchPlan(name=name, **fields)  # type: ignore[arg-type]


def check(*branches: BranchPlan, protocol: Protocol = Protocol.SAGA, concurrent: bool = False,
          allow: AllowList = AllowList(), limits: Limits = Limits()) -> None:
    check_plan(tuple(branches), protocol, concurrent, limits, allow)


@pytest.mark.parametrize(("branches", "concurrent", "field", "words"), [
    ((), False, "branches", "at least one"),
    ((b(participant=""),), False, "branches[0].participant", "required"),
    ((b(participant="no-port"),), False, "branches[0].participant", "host:port"),
    ((b(action=""),), False, "branches[0].action", "required"),
    ((b("a"), b("a")), False, "branches[1].name", "duplicate"),
    ((b("a", after=("zz",)),), True, "branches[0].after", "unknown branch"),
    ((b("a", after=("b",)), b("b", after=("a",))), True, "branches.after", "cycle"),
    ((b("a"), b("b", after=("a",))), False, "branches[1].after", "concurrent=true"),
    ((b(name="a/b"),), False, "branches[0].name", "characters"),
    ((b(timeout_s=0.0),), False, "branches[0].timeout", "must be in"),
    ((b(payload=b"x" * (256 * 1024 + 1)),), False, "branches[0].payload", "larger"),
])
def test_bad_plans_name_the_field(branches: tuple[BranchPlan, ...], concurrent: bool,
                                  field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check(*branches, concurrent=concurrent)
    assert err.value.field == field
    assert words in str(err.value)


def test_too_many_branches() -> None:
    with pytest.raises(InvalidArgument, match="at most 2 branches"):
        check(b("a"), b("b"), b("c"), limits=Limits(max_branches=2))


def test_two_phase_branches_have_no_compensation() -> None:
    with pytest.raises(InvalidArgument) as err:
        check(b(compensation="x.undo"), protocol=Protocol.TWO_PHASE)
    assert err.value.field == "branches[0].compensation"


def test_allow_list_limits_participant_addresses() -> None:
    allow = AllowList(("10.0.0.5:*", "*.svc.local:7000"))
    check(b(participant="10.0.0.5:9000"), allow=allow)
    check(b(participant="pay.svc.local:7000"), allow=allow)
    with pytest.raises(InvalidArgument, match="not allowed"):
        check(b(participant="169.254.169.254:80"), allow=allow)


def test_gid_and_labels() -> None:
    check_gid("order-42:retry@1")
    for bad in ("", "a/b", "x" * 129, "space here"):
        with pytest.raises(InvalidArgument):
            check_gid(bad)
    with pytest.raises(InvalidArgument, match="at most 1 labels"):
        check_labels({"a": "1", "b": "2"}, Limits(max_labels=1))


def test_a_valid_dag_passes() -> None:
    check(b("a"), b("b", after=("a",)), b("c", after=("a", "b")), concurrent=True)
