"""``txc serve`` takes every flag from the environment too (TXC_FLAG_NAME): containers
are configured that way (docker-compose.yml)."""

from __future__ import annotations

import pytest

from coordinator.cli import build_parser
from coordinator.cli._serve import options_from
from coordinator.telemetry._metrics import parse_listen


def test_every_serve_flag_has_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, raw in {"TXC_MAX_ACTIVE": "7", "TXC_ALLOW_PARTICIPANT": "a:1, b:*", "TXC_DEV": "1",
                      "TXC_GRACE": "2.5", "TXC_PREFIX": "/p", "TXC_METRICS_LISTEN": "0.0.0.0:9464",
                      "TXC_PARTICIPANT_TRANSPORT": "unary"}.items():
        monkeypatch.setenv(name, raw)
    args = build_parser().parse_args(["serve"])
    assert (args.max_active, args.allow_participant, args.dev, args.grace, args.prefix,
            args.metrics_listen, args.participant_transport) == (
        7, ["a:1", "b:*"], True, 2.5, "/p", "0.0.0.0:9464", "unary")
    assert build_parser().parse_args(["serve", "--max-active", "9"]).max_active == 9  # flag wins
    assert options_from(args, ["e:2379"]).metrics_listen == "0.0.0.0:9464"


def test_a_variable_outside_a_flags_choices_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TXC_PARTICIPANT_TRANSPORT", "carrier-pigeon")
    with pytest.raises(SystemExit, match="TXC_PARTICIPANT_TRANSPORT"):
        build_parser()


def test_metrics_are_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TXC_METRICS_LISTEN", raising=False)
    assert build_parser().parse_args(["serve"]).metrics_listen == ""
    with pytest.raises(SystemExit, match="--metrics-listen"):
        options_from(build_parser().parse_args(["serve", "--metrics-listen", "nope"]), ["e:1"])


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::]:9464", ("::", 9464)), (":9464", ("0.0.0.0", 9464)),
])
def test_metrics_listen_addresses(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected
