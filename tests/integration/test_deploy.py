"""docker-compose.yml, the Dockerfile and deploy/ cannot drift from what txcoord accepts.

No Docker engine here: docker-compose checks the file (``config``), and the topology's
txcoord processes are checked by running what the file names, as the file names it: every
command line through the parser of the program it starts, and one coordinator started with
the file's command and environment (its addresses moved to free local ports, its etcd the
test's) and probed with the Dockerfile's healthcheck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import pytest
import yaml
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url
from txcoord_chaos.workload.services import build_parser as services_parser

from coordinator import Saga, Step, tracer_provider_from_env
from coordinator.cli import build_parser
from coordinator.cli._common import env_name
from coordinator.cli._serve import options_from
from coordinator.participant import PrometheusParticipantMetrics
from coordinator.rpc.net import free_port
from coordinator.server import DevEtcd
from coordinator.telemetry._metrics import PrometheusMetrics
from coordinator.telemetry._tracing_env import exporter_names
from tests.support import databases
from tests.support.processes import ROOT

from .conftest import client_for
from .test_metrics import scrape, value

pytestmark = pytest.mark.integration
COMPOSE = ROOT / "docker-compose.yml"
SERVICES_MODULE = ["python", "-m", "txcoord_chaos.workload.services"]


def services() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return found


def coordinators() -> dict[str, Any]:
    return {name: s for name, s in services().items() if s.get("command", [])[:2] == ["txc", "serve"]}


def participants() -> dict[str, Any]:
    """The example participant services (chaos/txcoord_chaos/workload/services.py)."""
    return {name: s for name, s in services().items() if s.get("command", [])[:3] == SERVICES_MODULE}


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def serve_flags() -> set[str]:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    return {o for a in serve._actions for o in a.option_strings if o.startswith("--")}


def test_docker_compose_accepts_the_file() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/setup.sh installs Debian's)")
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_every_command_parses_and_every_variable_is_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    known = {env_name(flag) for flag in serve_flags()}
    assert len(coordinators()) == 2
    for name, service in coordinators().items():
        env = {k: str(v) for k, v in service["environment"].items()}
        otel = {k: v for k, v in env.items() if k.startswith("OTEL_")}
        assert set(env) - set(otel) <= known, f"{name}: not txc serve flags: {sorted(set(env) - known)}"
        assert_traces_configured(name, otel)
        for key, raw in env.items():
            monkeypatch.setenv(key, raw)
        args = build_parser().parse_args(service["command"][1:])
        options = options_from(args, [e for e in args.etcd.split(",") if e])
        assert options.metrics_listen and options.allow_participants, name
    workload = participants().values()
    assert {s["command"][3] for s in workload} == {"accounts", "orders"}
    for service in workload:
        args = services_parser().parse_args(service["command"][3:])
        assert args.metrics_listen, service["command"]
        assert_traces_configured(service["command"][3], service["environment"])


def assert_traces_configured(name: str, otel: dict[str, str]) -> None:
    """``otel`` (OTEL_* variables) is what tracing understands and sends spans over OTLP to
    the file's Jaeger."""
    assert exporter_names(otel) == ["otlp"], name
    provider = tracer_provider_from_env(otel)
    assert provider is not None, name
    provider.shutdown()
    assert urlparse(otel["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname in services(), name


def test_prometheus_scrapes_every_coordinator_where_it_serves_metrics() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    expected = {f"{name}:{s['environment']['TXC_METRICS_LISTEN'].rpartition(':')[2]}"
                for name, s in coordinators().items()}
    assert set(jobs["txcoord"]) == expected
    served = {f"{name}:{flag(s['command'], '--metrics-listen').rpartition(':')[2]}"
              for name, s in participants().items()}
    assert set(jobs["txcoord-participants"]) == served
    assert {t.split(":")[0] for t in jobs["etcd"]} == {n for n in services() if n.startswith("etcd-")}


def test_alerts_and_dashboard_name_only_metrics_txcoord_exports() -> None:
    registry = CollectorRegistry()  # the coordinator's and the participant SDK's
    PrometheusMetrics(registry)
    PrometheusParticipantMetrics(registry)
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    exported = {f.name + end for f in registry.collect() for end in suffixes[f.type]}
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/txcoord.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = {m for e in exprs for m in re.findall(r"\btxc_[a-z_]+", e)}
    assert len(named) >= 10 and named <= exported, named - exported
    assert any(m.startswith("txc_participant_") for m in named)
    assert len({r["alert"] for g in rules["groups"] for r in g["rules"]}) >= 5


def dockerfile_healthcheck() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert match, "the Dockerfile has no HEALTHCHECK CMD [...]"
    command: list[str] = json.loads(match.group(1))
    return command


def start(argv: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen[bytes]:
    """``python ARGV...`` with this test's python, its output in ``log``."""
    return subprocess.Popen([sys.executable, *argv], env=env, cwd=ROOT, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def start_as_the_file_says(service: dict[str, Any], env: dict[str, str],
                          log: Path) -> subprocess.Popen[bytes]:
    return start(["-m", "coordinator.cli", *service["command"][1:]], env, log)  # txc ...


def run_healthcheck(env: dict[str, str]) -> int:
    probe = dockerfile_healthcheck()
    assert probe[0] == "python", probe  # the image's python is this test's
    return subprocess.run([sys.executable, *probe[1:]], env=env, cwd=ROOT, timeout=30).returncode


async def test_a_coordinator_started_as_the_file_says_serves_and_is_healthy(
        etcd: DevEtcd, prefix: str, tmp_path: Path) -> None:
    service = coordinators()["coordinator-1"]
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, **{k: str(v) for k, v in service["environment"].items()},
           "TXC_ETCD": etcd.endpoint, "TXC_PREFIX": prefix,
           "TXC_LISTEN": f"127.0.0.1:{port}", "TXC_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}
    log = tmp_path / "coordinator.log"
    proc = start_as_the_file_says(service, env, log)
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        await asyncio.wait_for(channel.channel_ready(), 30)
        await channel.close(None)
        assert await asyncio.to_thread(run_healthcheck, env) == 0, log.read_text()[-2000:]
        async with client_for(port) as client:
            # The file's allow-list is in force: a participant it does not name is refused.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.start_saga(Saga([Step("a", "elsewhere:1", "a.do", "a.undo")]))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        samples = await scrape(metrics_port)
        assert value(samples, "txc_grpc_server_requests_total",
                     method="/txc.v1.Coordinator/Starts", code="INVALID_ARGUMENT") == 1
    finally:
        proc.terminate()
        proc.wait(30)
    assert "Traceback" not in log.read_text()
    assert await asyncio.to_thread(run_healthcheck, env) == 1  # stopped: unhealthy


def test_promtool_accepts_the_rules_and_the_config(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    rules = ROOT / "deploy/prometheus/alerts.yml"
    config = tmp_path / "prometheus.yml"  # the rules where the container mounts them, here
    config.write_text((ROOT / "deploy/prometheus/prometheus.yml").read_text()
                      .replace("/etc/prometheus/alerts.yml", str(rules)))
    for args in (["check", "rules", str(rules)], ["check", "config", str(config)]):
        done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


async def test_a_participant_service_started_as_the_file_says_serves_its_metrics(tmp_path: Path) -> None:
    """``accounts`` with the file's command, its database moved to the test's server and its
    addresses to free local ports (no call is made: its business tables are not needed)."""
    command = list(participants()["accounts"]["command"])
    server = databases.SERVERS["postgresql"]
    name = f"txc_deploy_{os.getpid()}"
    dsn = await databases.create_database(server, name)
    port, metrics_port = free_port(), free_port()
    for option, moved in (("--dsn", dsn), ("--listen", f"127.0.0.1:{port}"),
                          ("--metrics-listen", f"127.0.0.1:{metrics_port}")):
        command[command.index(option) + 1] = moved
    del command[command.index("--coordinator"):command.index("--coordinator") + 2]  # no 2PC
    log = tmp_path / "accounts.log"
    proc = start(command[1:], None, log)  # python -m txcoord_chaos.workload.services ...
    try:
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for _ in range(300):
            with contextlib.suppress(OSError):
                samples = await scrape(metrics_port)
                break
            await asyncio.sleep(0.1)
        assert ("txc_participant_calls_total",
                frozenset({("op", "execute"), ("outcome", "ok")})) in samples, log.read_text()[-2000:]
    finally:
        proc.terminate()
        proc.wait(30)
        await databases.drop_database(server, make_url(dsn).database or name)
