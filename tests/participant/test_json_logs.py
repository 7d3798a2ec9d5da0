"""The SDK's JSON lines: a call's gid, branch, op and attempt are on every line logged while
it runs (the handler's own included), and its payload is on none, even when it fails."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator import ppb
from coordinator.participant import BranchContext, json_log_handler

from .conftest import Db
from .test_host import build_host, serve

pytestmark = pytest.mark.integration
MARKER = "4111-1111-PAYLOAD-MARKER"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """What a service configured with ``json_log_handler`` writes (every logger's lines)."""
    stream = io.StringIO()
    handler = json_log_handler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_failing_call_logs_its_fields_and_never_its_payload(
        db: Db, gid: str, output: io.StringIO) -> None:
    host = build_host(db.engine)

    @host.execute("logging.statement")  # the payload goes into a statement that fails
    async def statement(ctx: BranchContext, conn: AsyncConnection, payload: bytes) -> bytes:
        logging.getLogger("service").warning("handling")
        await conn.execute(text("SELECT no_such_column FROM sdk_effects WHERE gid = :p"),
                           {"p": payload.decode()})
        return b""

    served = await serve(host)
    try:
        payload = json.dumps({"card": MARKER}).encode()
        for operation, attempt in (("logging.statement", 3), ("buggy.op", 1)):
            reply = await served.call("Execute", gid, operation, payload, branch="card",
                                      attempt=attempt)
            assert reply.outcome == ppb.OUTCOME_RETRY
    finally:
        await served.close()
    lines = parsed(output)
    fields = {"gid": gid, "branch": "card", "op": "execute"}
    handler_line = next(line for line in lines if line["logger"] == "service")
    assert handler_line.items() >= {**fields, "attempt": 3}.items()
    failures = [line for line in lines if line["level"] == "ERROR" and line.get("gid") == gid]
    assert [line["attempt"] for line in failures] == [3, 1]
    assert all(line.items() >= fields.items() for line in failures)
    assert "RuntimeError: a bug" in failures[1]["exception"]
    assert MARKER not in output.getvalue()
