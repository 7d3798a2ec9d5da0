"""The coordinator's options check their own rules, once, naming the field; ``txc serve``
takes its defaults from them and turns a refusal into one line naming the flag."""

from __future__ import annotations

import pytest

from coordinator.cli import build_parser
from coordinator.cli._serve import options_from
from coordinator.domain.validation import Limits
from coordinator.engine import EngineOptions
from coordinator.log import EtcdOptions
from coordinator.server import Defaults, ServerOptions


@pytest.mark.parametrize(("build", "field"), [
    (lambda: ServerOptions(protect_reads=True), "protect_reads"),
    (lambda: ServerOptions(participant_transport="carrier-pigeon"), "participant_transport"),  # type: ignore[arg-type]
    (lambda: ServerOptions(metrics_listen="nowhere"), "metrics_listen"),
    (lambda: ServerOptions(scan_interval_s=0), "scan_interval_s"),
    (lambda: ServerOptions(grace_s=-1), "grace_s"),
    (lambda: Defaults(branch_timeout_s=0), "branch_timeout_s"),
    (lambda: EtcdOptions(prefix="txc"), "prefix"),
    (lambda: EtcdOptions(prefix="/txc/"), "prefix"),
    (lambda: EtcdOptions(endpoints=()), "endpoints"),
    (lambda: EtcdOptions(lease_ttl_s=0), "lease_ttl_s"),
    (lambda: EngineOptions(max_calls_per_participant=0), "max_calls_per_participant"),
    (lambda: EngineOptions(store_retry_initial_s=3.0), "store_retry_max_s"),
    (lambda: Limits(max_active=0), "max_active"),
    (lambda: Limits(max_multiplier=0.5), "max_multiplier"),
])
def test_an_option_breaking_a_rule_is_refused_naming_its_field(build: object, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        build()  # type: ignore[operator]


def test_the_defaults_keep_every_rule() -> None:
    ServerOptions(), EtcdOptions(), EngineOptions(), Limits(), Defaults()


def test_txc_serve_takes_its_defaults_from_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TXC_LISTEN", "TXC_PREFIX", "TXC_GRACE", "TXC_PARTICIPANT_TRANSPORT",
                 "TXC_MAX_ACTIVE", "TXC_LEASE_TTL", "TXC_RETENTION"):
        monkeypatch.delenv(name, raising=False)
    built = options_from(build_parser().parse_args(["serve"]), ["e:2379"])
    expected = ServerOptions()
    assert (built.listen, built.grace_s, built.participant_transport, built.limits,
            built.engine) == (expected.listen, expected.grace_s,
                              expected.participant_transport, expected.limits, expected.engine)
    assert (built.etcd.prefix, built.etcd.lease_ttl_s, built.etcd.retention_s) == (
        expected.etcd.prefix, expected.etcd.lease_ttl_s, expected.etcd.retention_s)


@pytest.mark.parametrize(("flags", "message"), [
    (["--protect-reads"], "--protect-reads: needs operators"),
    (["--max-active", "0"], "--max-active: must be positive"),
    (["--max-calls-per-participant", "0"], "--max-calls-per-participant: must be at least 1"),
    (["--hold-resume-rate", "0"], "--hold-resume-rate: must be positive"),
    (["--lease-ttl", "0"], "--lease-ttl: must be positive"),
    (["--prefix", "txc"], "--prefix: must start with '/'"),
    (["--metrics-listen", "nope"], "--metrics-listen: 'nope' is not HOST:PORT"),
])
def test_txc_serve_names_the_flag_an_option_refuses(flags: list[str], message: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TXC_PROTECT_READS", raising=False)
    with pytest.raises(SystemExit, match=f"^txc serve: {message}"):
        options_from(build_parser().parse_args(["serve", *flags]), ["e:2379"])
