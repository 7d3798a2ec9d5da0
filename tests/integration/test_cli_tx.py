"""``txc tx`` as an operator runs it: a real process against a real coordinator."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from coordinator import Saga, Step, pb
from coordinator.server import DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import client_for, txc
from .participant import ScriptedParticipant
from .test_operator import broken_refund
from .test_saga_service import FAST

pytestmark = pytest.mark.integration


async def test_find_inspect_and_replay_failed_sagas(etcd: DevEtcd, prefix: str,
                                                    participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        for gid in ("f1", "f2", "f3"):
            await c.start_saga(broken_refund(participant, gid), wait=True)
        await c.start_saga(Saga([Step("a", participant.address, "a.do", "a.undo", {},
                                      retry=FAST)], gid="ok1"), wait=True)
        port = server.port

        code, out, _ = await txc(port, "list", "--state", "failed", "--json")
        assert code == 0
        listed = json.loads(out)
        assert sorted(t["gid"] for t in listed) == ["f1", "f2", "f3"]
        assert {t["state"] for t in listed} == {"TX_STATE_FAILED"}

        code, out, _ = await txc(port, "list", "--jsonl", "--gid-prefix", "ok")
        assert [json.loads(line)["gid"] for line in out.splitlines()] == ["ok1"]

        code, out, _ = await txc(port, "show", "f1")
        assert code == 0 and "FAILED" in out and "compensation of a refused" in out
        # where each branch lives and what it runs, without the client's code
        assert f"at {participant.address}, action a.do, compensation a.undo" in out
        code, out, _ = await txc(port, "show", "f1", "--json")
        shown = json.loads(out)["branches"][1]
        assert (shown["participant"], shown["action"], shown["compensation"]) == (
            participant.address, "b.do", "b.undo")

        code, _, err = await txc(port, "show", "missing-gid")
        assert code == 3 and "missing-gid" in err

        code, _, err = await txc(port, "abort", "f1", "--reason", "x")
        assert code == 1 and "failed_precondition" in err

        code, out, _ = await txc(port, "replay", "--all", "--dry-run", "--reason", "fixed")
        assert code == 0 and "3 transaction(s) would be replayed" in out

        participant.healed = True
        code, out, _ = await txc(port, "replay", "f1", "--reason", "refund fixed")
        assert code == 0
        code, out, _ = await txc(port, "replay", "--all", "--state", "failed", "--reason", "fixed")
        assert code == 0 and "replayed 2 of 2" in out
        for gid in ("f1", "f2", "f3"):
            assert (await c.wait_settled(gid)).state == pb.TX_STATE_COMPENSATED
            assert participant.effects[f"{gid}/a/compensate"] == 1

        code, out, _ = await txc(port, "show", "f1")
        assert "replay" in out and "refund fixed" in out

        code, _, err = await txc(port, "skip", "f1", "a", "--reason", "x")
        assert code == 1


async def test_unreachable_coordinator_exits_4() -> None:
    code, _, err = await txc(1, "--timeout", "1", "list")
    assert code == 4 and "unreachable" in err


async def test_a_reader_that_goes_away_ends_the_output_quietly(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    """``txc tx show X | head -5``: head has gone when txc writes (here: a pipe whose
    reading end is closed already)."""
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        await c.start_saga(broken_refund(participant, "piped"), wait=True)
        for args in (["show", "piped"], ["show", "piped", "--watch"], ["list"]):
            read, write = os.pipe()
            os.close(read)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "coordinator.cli", "tx", "--coordinator",
                f"127.0.0.1:{server.port}", *args, stdout=write, stderr=asyncio.subprocess.PIPE)
            os.close(write)
            _, err = await proc.communicate()
            assert proc.returncode == 141, (args, err.decode())  # 128 + SIGPIPE, as cat or git
            assert err == b"", (args, err.decode())
