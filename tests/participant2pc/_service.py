"""The participant service the 2PC tests run, in-process and as a killable process.

Operations (payload JSON):
* ``rows.put``  {"id": ..., "v": N} inserts a row; {"refuse": true} votes no;
  {"readonly": true} only reads (a read-only branch).
* ``rows.bump`` {"id": ...} adds 1 to an existing row's ``v`` (holds its row lock while
  prepared).
Every run of a handler is counted in ``RUNS`` (per gid/branch), to check "runs once".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator.participant import (
    BranchContext,
    HostOptions,
    ParticipantHost,
    Refused,
    json_object,
)

business = MetaData()
rows = Table(
    "p2_rows",
    business,
    Column("id", String(64), primary_key=True),
    Column("v", Integer, nullable=False),
)
RUNS: Counter[str] = Counter()
BUILT: list[ParticipantHost] = []
"""Every host built in this process: the tests give their kept MariaDB sessions back."""


def build(engine: AsyncEngine, options: HostOptions | None = None) -> ParticipantHost:
    host = ParticipantHost(engine, options or HostOptions(call_timeout_s=10.0))
    BUILT.append(host)

    @host.prepare("rows.put", decode=json_object)
    async def put(ctx: BranchContext, conn: AsyncConnection, body: dict[str, Any]) -> bytes:
        RUNS[f"{ctx.gid}/{ctx.branch}"] += 1
        if body.get("refuse"):
            raise Refused("refused by test")
        if body.get("readonly"):
            await conn.execute(select(rows.c.v).where(rows.c.id == str(body["id"])))
            return b"read only"
        await conn.execute(rows.insert().values(id=str(body["id"]), v=int(body.get("v", 1))))
        return f"put {body['id']}".encode()

    @host.prepare("rows.bump", decode=json_object)
    async def bump(ctx: BranchContext, conn: AsyncConnection, body: dict[str, Any]) -> bytes:
        RUNS[f"{ctx.gid}/{ctx.branch}"] += 1
        changed = await conn.execute(
            update(rows).where(rows.c.id == str(body["id"])).values(v=rows.c.v + 1))
        if changed.rowcount != 1:
            raise Refused(f"no row {body['id']}")
        return b"bumped"

    return host
