"""How a client turns the coordinators it is given into one gRPC target and config."""

from __future__ import annotations

import json

import pytest

from coordinator.client._failover import Failover, split_addresses, target


def test_a_list_or_a_comma_separated_string_names_the_same_coordinators() -> None:
    assert split_addresses("a:1, b:2,") == ["a:1", "b:2"]
    assert split_addresses(["a:1,b:2", "c:3"]) == ["a:1", "b:2", "c:3"]
    with pytest.raises(ValueError, match="at least one"):
        split_addresses(" , ")


def test_one_address_is_left_to_grpc_to_resolve() -> None:
    assert target(["coordinators.internal:7070"]) == ("coordinators.internal:7070", None)
    assert target(["dns:///coordinators:7070"]) == ("dns:///coordinators:7070", None)


def test_several_become_one_balanced_list_of_addresses() -> None:
    assert target(["127.0.0.1:7070", "127.0.0.2:7071"]) == ("ipv4:127.0.0.1:7070,127.0.0.2:7071",
                                                             None)
    assert target(["[::1]:7070", "[::1]:7071"]) == ("ipv6:[::1]:7070,[::1]:7071", None)
    where, name = target(["localhost:7070", "127.0.0.1:7071"])
    assert where == "ipv4:127.0.0.1:7070,127.0.0.1:7071" and name == "localhost"


def test_a_bad_address_is_named() -> None:
    with pytest.raises(ValueError, match="'nonsense'"):
        target(["nonsense", "127.0.0.1:1"])
    with pytest.raises(ValueError, match="cannot resolve"):
        target(["no-such-host.invalid:1", "127.0.0.1:1"])


def test_only_idempotent_methods_are_sent_again() -> None:
    config = json.loads(Failover().service_config())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    names = {n["method"] for n in method["name"]}
    assert {"StartSaga", "StartTwoPhase", "GetTransaction"} <= names
    assert not names & {"ReplayTransaction", "SkipBranch", "AbortTransaction"}
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert config["healthCheckConfig"] == {"serviceName": "txc.v1.Coordinator"}
    assert "healthCheckConfig" not in json.loads(Failover(health_check=False).service_config())


def test_failover_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        Failover(max_attempts=9)
    with pytest.raises(ValueError, match="keepalive_s"):
        Failover(keepalive_s=0)
