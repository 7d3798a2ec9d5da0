"""The reference participants under test: the Python SDK's documented accounts service and
the Node.js one in examples/node-participant, both answering the same scenario."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator import pb
from coordinator.participant import BranchContext, ParticipantHost, Refused

NODE_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node-participant"


# Settlement notices the Python service received: one row per notice it applied.
NOTICES = MetaData()
notices = Table("conf_notices", NOTICES, Column("gid", String(128), nullable=False))


def python_host(example: Any, engine: Any) -> ParticipantHost:
    """docs/participant.md's accounts service, plus the 2PC debit of its section 7, a
    balance to observe, and a receiver of settlement notices with their count to observe."""
    host: ParticipantHost = example.build(engine)

    @host.notice("orders.settled")
    async def settled(ctx: BranchContext, conn: AsyncConnection, tx: pb.Transaction) -> bytes:
        await conn.execute(notices.insert().values(gid=tx.gid))
        return b""

    @host.execute("orders.noticed")
    async def noticed(ctx: BranchContext, conn: AsyncConnection, body: bytes) -> bytes:
        count = (await conn.execute(select(func.count()).select_from(notices))).scalar_one()
        return json.dumps({"count": count}).encode()

    balances, transfer = example.balances, example.Transfer

    @host.prepare("accounts.debit", decode=transfer.decode)
    async def debit(ctx: BranchContext, conn: AsyncConnection, t: Any) -> bytes:
        found = await conn.execute(select(balances.c.amount).where(balances.c.account == t.account)
                                   .with_for_update())
        balance = found.scalar_one_or_none()
        if balance is None or balance < t.amount:
            raise Refused("insufficient funds")
        await conn.execute(balances.update().where(balances.c.account == t.account)
                           .values(amount=balance - t.amount))
        return b""

    @host.execute("accounts.balance", decode=json.loads)
    async def balance(ctx: BranchContext, conn: AsyncConnection, body: dict[str, str]) -> bytes:
        found = await conn.execute(select(balances.c.amount).where(balances.c.account == body["account"]))
        return json.dumps({"balance": found.scalar_one()}).encode()

    return host


def node_modules() -> None:
    """The example's npm dependencies, installed from its lock file unless they already are
    (so a machine that installed them once runs offline). Skips without node or npm."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the Node.js reference participant needs "
                        "Node.js 18+ and npm")
    marker = NODE_EXAMPLE / "node_modules" / ".package-lock.json"
    lock = NODE_EXAMPLE / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=NODE_EXAMPLE,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"npm ci in {NODE_EXAMPLE} failed:\n{done.stdout}\n{done.stderr}"


class NodeService:
    """``node server.js`` on a free port, against the database ``dsn`` names."""

    def __init__(self, dsn: str) -> None:
        self._url = make_url(dsn).set(drivername="postgresql").render_as_string(hide_password=False)
        self._proc: asyncio.subprocess.Process | None = None
        self.address = ""

    async def start(self) -> str:
        env = {**os.environ, "TXC_PG_URL": self._url, "LISTEN": "127.0.0.1:0"}
        self._proc = await asyncio.create_subprocess_exec(
            "node", "server.js", cwd=NODE_EXAMPLE, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        assert self._proc.stdout is not None
        line = (await asyncio.wait_for(self._proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("listening on "), f"node server.js did not start: {line!r}"
        self.address = line.removeprefix("listening on ")
        return self.address

    async def stop(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        self._proc.terminate()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
