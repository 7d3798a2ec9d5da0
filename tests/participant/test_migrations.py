"""Migrations up and down on real PostgreSQL and MariaDB, from Python, from `txc migrate`
and from Alembic's own command line; the result matches the SDK's table metadata."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from coordinator.cli import _migrate
from coordinator.participant import Relay, StartSagaSender, create_engine, outbox, upgrade
from coordinator.participant._db.migrations import (
    VERSION_TABLE,
    current_revision,
    downgrade,
    head_revision,
)
from coordinator.participant._db.tables import metadata
from coordinator.participant.outbox import START_SAGA
from tests.support.databases import SERVERS, create_database, drop_database

from ._outbox_child import saga
from ._receiver import SagaReceiver

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OURS = {"txc_barrier", "txc_outbox", "txc_xa"}


@pytest.fixture(params=sorted(SERVERS))
async def fresh(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    kind: str = request.param
    name = f"txc_sdk_mig_{os.getpid()}"
    dsn = await create_database(SERVERS[kind], name)
    yield dsn
    await drop_database(SERVERS[kind], name)


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={
        "compare_type": True,
        "include_name": lambda name, type_, _p: type_ != "table" or name in OURS,
    })
    return list(compare_metadata(context, metadata))


async def test_up_matches_metadata_and_down_removes_everything(fresh: str) -> None:
    engine = create_engine(fresh)
    try:
        assert await current_revision(engine) is None
        assert await upgrade(engine) == head_revision()
        assert await upgrade(engine) == head_revision()  # idempotent
        async with engine.connect() as conn:
            assert OURS | {VERSION_TABLE} <= await conn.run_sync(_tables)
            assert await conn.run_sync(_diff) == []
        assert await downgrade(engine, "0001_barrier") == "0001_barrier"
        async with engine.connect() as conn:
            assert (await conn.run_sync(_tables)) & OURS == {"txc_barrier"}
        assert await downgrade(engine, "base") is None
        async with engine.connect() as conn:
            assert not (await conn.run_sync(_tables)) & OURS
    finally:
        await engine.dispose()


def alembic(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alembic", "-x", f"dsn={dsn}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


async def test_alembic_command_line_runs_the_same_migrations(fresh: str) -> None:
    up = await asyncio.to_thread(alembic, fresh, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    assert "Running upgrade 0003_two_phase -> 0004_outbox_trace" in up.stderr
    engine = create_engine(fresh)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
    down = await asyncio.to_thread(alembic, fresh, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    engine = create_engine(fresh)
    try:
        assert await current_revision(engine) is None
    finally:
        await engine.dispose()


def txc_migrate(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="txc")
    _migrate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["migrate", *argv])
    code: int = args.func(args)
    return code


async def test_txc_migrate_applies_reports_and_rolls_back(
        fresh: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(txc_migrate, "--dsn", fresh) == 0
    assert "at revision 0004_outbox_trace (head)" in capsys.readouterr().out
    assert await asyncio.to_thread(txc_migrate, "--dsn", fresh, "--down", "0001_barrier") == 0
    assert "at revision 0001_barrier (head is 0004_outbox_trace)" in capsys.readouterr().out
    assert await asyncio.to_thread(txc_migrate, "--dsn", fresh, "--status") == 0
    assert "0001_barrier" in capsys.readouterr().out
    assert await asyncio.to_thread(txc_migrate, "--dsn", fresh, "--down", "nonsense") == 1
    assert "nonsense" in capsys.readouterr().err


async def test_txc_migrate_names_a_wrong_dsn_without_its_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    dsn = "postgresql+asyncpg://app:s3cret@127.0.0.1:1/shop"
    assert await asyncio.to_thread(txc_migrate, "--dsn", dsn) == 2
    err = capsys.readouterr().err
    assert "postgresql+asyncpg://app:***@127.0.0.1:1/shop" in err and "s3cret" not in err
    assert await asyncio.to_thread(txc_migrate, "--dsn", "sqlite:///x.db") == 2
    assert "supported" in capsys.readouterr().err


async def test_the_outbox_keeps_working_on_a_database_not_yet_migrated_to_its_trace_column(
        fresh: str) -> None:
    """The SDK deployed before ``txc migrate``: traced messages are written and delivered,
    without their trace, instead of failing the business transaction."""
    receiver = SagaReceiver()
    sender = StartSagaSender(await receiver.start(), timeout_s=1.0)
    engine = create_engine(fresh)
    try:
        assert await upgrade(engine, "0003_two_phase") == "0003_two_phase"
        with TracerProvider().get_tracer("shop").start_as_current_span("checkout"):
            async with engine.begin() as conn:
                await outbox.add_start_saga(conn, saga("before-0004"))
        stats = await Relay(engine, {START_SAGA: sender}).run_once()
        assert stats.sent == 1 and receiver.calls["before-0004"] == 1
        assert "before-0004" not in receiver.traceparents
    finally:
        await sender.close()
        await receiver.stop()
        await engine.dispose()
