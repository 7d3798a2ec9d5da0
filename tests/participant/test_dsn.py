"""DSNs as libpq, psql and most tools write them (postgresql://, postgres://, mysql://,
mariadb://) run on the SDK's async drivers: parsed alike everywhere the SDK takes a DSN
(create_engine, txc migrate, the Alembic environment), and used on the real servers."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from coordinator.cli import _migrate
from coordinator.participant import DsnError, create_engine
from coordinator.participant._db.dsn import check_connection, parse
from coordinator.participant._db.migrations import current_revision, head_revision
from tests.support.databases import SERVERS, create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
PLAIN = {"postgresql": ("postgresql", "postgres"), "mariadb": ("mysql", "mariadb")}


@pytest.mark.parametrize(("dsn", "driver"), [
    ("postgresql://postgres@db/accounts", "postgresql+asyncpg"),
    ("postgres://postgres@db/accounts", "postgresql+asyncpg"),
    ("mysql://root@db/orders", "mysql+aiomysql"),
    ("mariadb://root@db/orders", "mariadb+aiomysql"),
    ("postgresql+asyncpg://postgres@db/accounts", "postgresql+asyncpg"),
    ("mysql+aiomysql://root@db/orders", "mysql+aiomysql"),
])
def test_a_dsn_naming_no_driver_gets_the_async_one(dsn: str, driver: str) -> None:
    url = parse(dsn)
    assert url.drivername == driver
    assert (url.host, url.database) == (make_url(dsn).host, make_url(dsn).database)


def test_libpq_sslmode_is_passed_to_asyncpg_as_ssl() -> None:
    url = parse("postgresql://app:pw@db/accounts?sslmode=require")
    assert dict(url.query) == {"ssl": "require"} and url.password == "pw"


@pytest.mark.parametrize("dsn", ["postgresql+psycopg2://app@db/accounts", "mysql+pymysql://app@db/x",
                                 "sqlite:///x.db"])
def test_a_synchronous_driver_is_refused_naming_what_is_accepted(dsn: str) -> None:
    with pytest.raises(DsnError, match="supported: postgresql://, postgres://, mysql://, mariadb://"):
        parse(dsn)


def plain(server_dsn: str, scheme: str) -> str:
    """``server_dsn`` written the way libpq and the MySQL tools write it: no driver."""
    return scheme + "://" + server_dsn.split("://", 1)[1]


@pytest.fixture(params=sorted(SERVERS))
async def fresh(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """A new, empty database on each server: its kind and DSN (with the driver named)."""
    kind: str = request.param
    name = f"txc_sdk_dsn_{os.getpid()}"
    dsn = await create_database(SERVERS[kind], name)
    yield kind, dsn
    await drop_database(SERVERS[kind], name)


@pytest.mark.integration
async def test_create_engine_connects_with_every_plain_scheme(fresh: tuple[str, str]) -> None:
    kind, dsn = fresh
    for scheme in PLAIN[kind]:
        engine = create_engine(plain(dsn, scheme))
        try:
            await check_connection(engine)
        finally:
            await engine.dispose()


def txc_migrate(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="txc")
    _migrate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["migrate", *argv])
    code: int = args.func(args)
    return code


@pytest.mark.integration
async def test_txc_migrate_takes_the_url_psql_takes(fresh: tuple[str, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    kind, dsn = fresh
    first, second = PLAIN[kind]
    assert await asyncio.to_thread(txc_migrate, "--dsn", plain(dsn, first)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"at revision {head_revision()} (head)" in out
    assert out.startswith(parse(plain(dsn, first)).drivername + "://")  # the driver it ran on
    assert await asyncio.to_thread(txc_migrate, "--dsn", plain(dsn, second), "--status") == 0
    assert f"at revision {head_revision()} (head)" in capsys.readouterr().out


@pytest.mark.integration
async def test_the_alembic_command_line_takes_it_too(fresh: tuple[str, str]) -> None:
    kind, dsn = fresh
    up = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "alembic", "-x", f"dsn={plain(dsn, PLAIN[kind][0])}", "upgrade", "head"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    engine = create_engine(dsn)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
