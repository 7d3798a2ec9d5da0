"""``txc serve --log-format json`` as an operator runs it: every line of its stderr is one
JSON object, a retried branch's line names the transaction (and its trace, when traced), and
no payload is logged."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from coordinator import Saga, Step, pb
from coordinator.rpc.net import free_port
from tests.support.processes import ROOT

from .conftest import client_for
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration
MARKER = "4111-1111-PAYLOAD-MARKER"


class JsonCoordinator:
    """``txc serve --dev --log-format json``, its stderr to a file."""

    def __init__(self, tmp: Path, **env_vars: str) -> None:
        self.port, self.log = free_port(), tmp / "serve.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("TXC_", "OTEL_"))}
        env = {**clean, **env_vars}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli", "serve", "--dev", "--log-format", "json",
             "--listen", f"127.0.0.1:{self.port}", "--grace", "1"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))

    async def ready(self) -> None:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        try:
            await asyncio.wait_for(channel.channel_ready(), 30)
        except TimeoutError:
            pytest.fail(f"txc serve not serving (exit {self.proc.poll()}):\n{self.stop()[-2000:]}")
        finally:
            await channel.close(None)

    def stop(self) -> str:
        """SIGTERM, then what it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        return self.log.read_text()


async def saga_lines(coordinator: JsonCoordinator, participant: ScriptedParticipant,
                     gid: str) -> tuple[list[dict[str, Any]], str]:
    """Run a saga whose one step is answered RETRY once; its branch's lines, and all the
    coordinator logged."""
    try:
        await coordinator.ready()
        saga = Saga(gid=gid, steps=[Step("debit", participant.address, "accounts.debit",
                                         "accounts.refund", {"flaky": 1, "card": MARKER})])
        async with client_for(coordinator.port) as client:
            reply = await client.start_saga(saga, wait=True)
        assert reply.transaction.state == pb.TX_STATE_COMMITTED
    finally:
        text = coordinator.stop()
    assert coordinator.proc.returncode == 0, text[-2000:]
    lines = [json.loads(line) for line in text.splitlines()]  # fails on any other line
    return [line for line in lines if line.get("gid") == gid and line.get("branch") == "debit"], text


async def test_a_saga_retried_once_is_logged_as_json_lines(
        participant: ScriptedParticipant, gid: str, tmp_path: Path) -> None:
    retried, text = await saga_lines(JsonCoordinator(tmp_path), participant, gid)
    assert [(line["op"], line["attempt"], line["outcome"]) for line in retried] == [
        ("execute", 1, "retry"), ("execute", 2, "ok")]
    assert {line["logger"] for line in retried} == {"txcoord.engine"}
    assert MARKER not in text


async def test_a_traced_coordinator_puts_the_trace_on_its_lines(
        participant: ScriptedParticipant, gid: str, tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    coordinator = JsonCoordinator(tmp_path, OTEL_TRACES_EXPORTER="console")  # spans to stdout
    retried, _ = await saga_lines(coordinator, participant, gid)
    assert len(retried) == 2
    (trace_id,) = {line["trace_id"] for line in retried}  # one trace per transaction
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and trace_id != "0" * 32
    assert all(re.fullmatch(r"[0-9a-f]{16}", line["span_id"]) for line in retried)
