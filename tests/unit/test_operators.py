"""Operator tokens: the file format, and who a call's metadata proves it is."""

from __future__ import annotations

import pytest

from coordinator.domain.errors import PermissionDenied, Unauthenticated
from coordinator.server import Operators

ALICE, BOB = "a" * 24, "b-token#0123456789"  # a '#' inside a token is no comment
FILE = f"""
# on-call operators
alice {ALICE}
bob   {BOB}   # rotated 2026-11
"""


def test_a_token_file_names_each_operator() -> None:
    ops = Operators.parse(FILE)
    assert ops.required and dict(ops.tokens) == {"alice": ALICE, "bob": BOB}
    assert not Operators().required


@pytest.mark.parametrize("text, problem", [
    ("alice", "line 1: expected 'NAME TOKEN"),
    (f"al ice {ALICE}", "line 1: rights are read, act or read,act"),
    (f"alice {ALICE} read {BOB}", "line 1: expected 'NAME TOKEN"),
    (f"alice {ALICE} write", "line 1: rights are read, act or read,act"),

    (f"ali/ce {ALICE}", "line 1: the name must be"),
    ("alice short", "line 1: the token of alice is shorter than 16"),
    (f"alice {ALICE}\n\nalice {BOB}", "line 3: alice appears twice"),
    ("# nobody\n", "no operators in it"),
])
def test_a_bad_token_file_is_refused_by_line_without_echoing_tokens(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as err:
        Operators.parse(text, "ops.tokens")
    assert ALICE not in str(err.value) and BOB not in str(err.value)


def test_the_bearer_token_names_the_operator() -> None:
    ops = Operators.parse(FILE)
    assert ops.identify([("x-txc-actor", "ann@ops"), ("authorization", f"Bearer {BOB}")]) == "bob"


@pytest.mark.parametrize("metadata", [
    [],
    [("authorization", ALICE)],  # no "Bearer "
    [("authorization", "Bearer not-a-known-token-at-all")],
    [("authorization", f"Bearer {ALICE[:-1]}")],
    [("x-txc-actor", "alice")],  # a claim is no proof
])
def test_no_or_a_wrong_token_is_unauthenticated(metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(Unauthenticated) as err:
        Operators.parse(FILE).identify(metadata)
    assert ALICE not in str(err.value)


def test_rights_and_certificate_names() -> None:
    ops = Operators.parse(f"alice {ALICE}\ncarol {BOB} read").with_certificates(
        "dave dave.example act\nerin erin.example")
    bearer = (("authorization", f"Bearer {BOB}"),)
    assert ops.identify(bearer, right="read") == "carol"
    with pytest.raises(PermissionDenied, match="carol may not act"):
        ops.identify(bearer, right="act")
    assert ops.identify((), "dave.example", "act") == "dave"
    with pytest.raises(PermissionDenied):
        ops.identify((), "dave.example", "read")
    assert ops.identify((), "erin.example", "read") == "erin"  # no rights named: both
    with pytest.raises(Unauthenticated):
        ops.identify((), "nobody.example", "read")  # a valid certificate, not an operator
