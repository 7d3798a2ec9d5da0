"""``txc serve --log-format json`` as an operator runs it: every line of its stderr is one
JSON object, a retried branch's line names the transaction, and no payload is logged."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from coordinator import Saga, Step, pb
from coordinator.net import free_port
from tests.support.processes import ROOT

from .conftest import client_for
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration
MARKER = "4111-1111-PAYLOAD-MARKER"


class JsonCoordinator:
    """``txc serve --dev --log-format json``, its stderr to a file."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.log = free_port(), tmp / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TXC_")}
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


async def test_a_saga_retried_once_is_logged_as_json_lines(
        participant: ScriptedParticipant, gid: str, tmp_path: Path) -> None:
    coordinator = JsonCoordinator(tmp_path)
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
    retried = [line for line in lines if line.get("gid") == gid and line.get("branch") == "debit"]
    assert [(line["op"], line["attempt"], line["outcome"]) for line in retried] == [
        ("execute", 1, "retry"), ("execute", 2, "ok")]
    assert {line["logger"] for line in retried} == {"txcoord.engine"}
    assert MARKER not in text
