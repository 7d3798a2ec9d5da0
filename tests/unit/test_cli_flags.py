"""Every ``txc tx`` command takes the connection flags before or after its name."""

from __future__ import annotations

import pytest

from coordinator.cli import build_parser

COMMANDS = [
    ["list", "--state", "failed"],
    ["show", "g1"],
    ["replay", "g1", "--reason", "r"],
    ["skip", "g1", "b", "--reason", "r"],
    ["abort", "g1", "--reason", "r"],
]
FLAGS = ["--coordinator", "10.0.0.1:7070", "--timeout", "3", "--tls-ca", "ca.pem", "--tls-cert", "c.pem",
         "--token-file", "tok"]


def _connection(argv: list[str]) -> tuple[str, float, str, str]:
    args = build_parser().parse_args(argv)
    return args.coordinator, args.timeout, args.tls_ca, args.token_file


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_flags_after_the_command_mean_what_they_mean_before_it(command: list[str]) -> None:
    expected = ("10.0.0.1:7070", 3.0, "ca.pem", "tok")
    assert _connection(["tx", *FLAGS, *command]) == expected
    assert _connection(["tx", *command, *FLAGS]) == expected


def test_a_flag_after_the_command_wins_over_one_before_and_defaults_stay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TXC_COORDINATOR", raising=False)
    assert _connection(["tx", "--coordinator", "a:1", "show", "g", "--coordinator", "b:2"])[0] == "b:2"
    assert _connection(["tx", "show", "g"])[:2] == ("127.0.0.1:7070", 10.0)


def test_replay_state_offers_only_states_a_replay_can_act_on(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["tx", "replay", "--all", "--state", "compensating",
                                      "--reason", "r"])
    assert args.state == ["compensating"]
    for finished in ("committed", "compensated", "aborted"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["tx", "replay", "--all", "--state", finished, "--reason", "r"])
        assert exited.value.code == 2
        assert f"invalid choice: '{finished}'" in capsys.readouterr().err
    assert "committed" in str(build_parser().parse_args(["tx", "list", "--state", "committed"]).state)
