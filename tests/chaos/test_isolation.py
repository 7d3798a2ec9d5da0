"""Runs that cannot touch each other: what a killed run left is cleaned by the next run, a
live run's never; two runs at once report what each would alone; a run that cannot start
says why, in summary.json and on its last line, and exits non-zero.

Real PostgreSQL and MariaDB (shared with whatever else runs on the machine: every name
here is a slot's or a run's own); the namespace parts need root, iproute2 and iptables."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from txcoord_chaos import isolation, netns
from txcoord_chaos.client import transfers
from txcoord_chaos.databases import Databases, ensure_databases
from txcoord_chaos.runner import RunConfig
from txcoord_chaos.workload.services import OUT_OF_STOCK_EVERY

from coordinator.participant import create_engine
from coordinator.participant.two_phase._xid import xid_for

pytestmark = pytest.mark.integration

ROOT = os.geteuid() == 0 and netns.unavailable() is None
SERVERS = Databases()


def _listed_namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


async def _prepare_leftovers(name: str) -> str:
    """What a run killed mid-2PC leaves: a branch prepared on each server."""
    dbs = replace(SERVERS, name=name)
    await ensure_databases(dbs)
    xid = xid_for(f"{name}-gid", "debit")
    pg = create_engine(dbs.pg(), isolation_level="AUTOCOMMIT")
    maria = create_engine(dbs.maria(), isolation_level="AUTOCOMMIT")
    try:
        async with pg.connect() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x int)")
            await conn.exec_driver_sql("BEGIN")
            await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            await conn.exec_driver_sql(f"PREPARE TRANSACTION '{xid}'")
        async with maria.connect() as conn:
            await conn.exec_driver_sql("CREATE TABLE txc_xa (xid varchar(64) primary key)")
            await conn.exec_driver_sql(f"INSERT INTO txc_xa VALUES ('{xid}')")
            for statement in ("XA START", "XA END", "XA PREPARE"):
                await conn.exec_driver_sql(f"{statement} '{xid}'")
            # Closed, not returned to the pool (which would try to roll it back): the
            # branch stays prepared after its session ends, as a killed service's does.
            await conn.invalidate()
    finally:
        await pg.dispose()
        await maria.dispose()
    return xid


async def _exists(name: str, xid: str) -> dict[str, bool]:
    pg = create_engine(SERVERS.pg().rsplit("/", 1)[0] + "/postgres")
    maria = create_engine(SERVERS.maria().rsplit("/", 1)[0] + "/mysql")
    try:
        async with pg.connect() as conn:
            pg_db = (await conn.execute(text("SELECT count(*) FROM pg_database WHERE datname = :n"),
                                        {"n": name})).scalar()
            pg_xa = (await conn.execute(text("SELECT count(*) FROM pg_prepared_xacts WHERE gid = :g"),
                                        {"g": xid})).scalar()
        async with maria.connect() as conn:
            maria_db = (await conn.execute(text("SELECT count(*) FROM information_schema.schemata "
                                                "WHERE schema_name = :n"), {"n": name})).scalar()
            maria_xa = any(xid in str(row[3]) for row in await conn.execute(text("XA RECOVER")))
    finally:
        await pg.dispose()
        await maria.dispose()
    return {"pg": bool(pg_db), "pg_xa": bool(pg_xa), "maria": bool(maria_db), "maria_xa": maria_xa}


def _tagged_sleeper(run_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "120"], env={**os.environ, isolation.ENV_TAG: run_id})


@pytest.fixture
def live_run() -> Iterator[tuple[isolation.Lease, subprocess.Popen[bytes]]]:
    """A run that is still going: a held slot, a process of its own, its namespace."""
    lease = isolation.claim_slot()
    lease.update(databases=[lease.identity.database])  # listed, so a wrong sweep would drop it
    sleeper = _tagged_sleeper(lease.identity.run_id)
    ns = netns.namespace_prefix(lease.identity.slot) + "c1"
    if ROOT:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        yield lease, sleeper
    finally:
        sleeper.kill()
        sleeper.wait()
        if ROOT:
            netns.remove_slot(lease.identity.slot)
        lease.release()


@pytest.fixture
async def dead_run(tmp_path: Path) -> AsyncIterator[tuple[isolation.Identity, str, Path]]:
    """A run killed mid-way: its record stays, its lock is gone, and all it made is left."""
    lease = isolation.claim_slot()
    ident = lease.identity
    etcd_dir = tmp_path / "etcd"
    etcd_dir.mkdir()
    lease.update(databases=[ident.database], etcd_dir=str(etcd_dir))
    xid = await _prepare_leftovers(ident.database)
    _tagged_sleeper(ident.run_id)  # orphaned on purpose: the sweep must find it by its tag
    if ROOT:
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "add",
                                                 netns.namespace_prefix(ident.slot) + "c1"], check=True)
    lease.release(forget=False)  # as the kernel does when a run is killed
    try:
        yield ident, xid, etcd_dir
    finally:
        isolation.kill_tagged(ident.run_id)


async def test_the_next_run_cleans_a_dead_runs_leftovers_and_no_live_runs(
        dead_run: tuple[isolation.Identity, str, Path],
        live_run: tuple[isolation.Lease, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    dead, xid, etcd_dir = dead_run
    live, live_sleeper = live_run
    assert await _exists(dead.database, xid) == {"pg": True, "pg_xa": True, "maria": True,
                                                 "maria_xa": True}
    lease = await isolation.claim(SERVERS, out=tmp_path / "out", keep_databases=False)
    try:
        assert lease.identity.slot != live.identity.slot
        assert await _exists(dead.database, xid) == {"pg": False, "pg_xa": False, "maria": False,
                                                     "maria_xa": False}
        assert isolation.kill_tagged(dead.run_id) == 0  # its process is gone already
        assert not etcd_dir.exists()
        record = isolation.state_dir() / f"slot-{dead.slot:02d}.json"  # the slot may be ours now
        assert not record.exists() or json.loads(record.read_text())["run_id"] == lease.identity.run_id
        if ROOT:
            assert netns.namespace_prefix(dead.slot) not in _listed_namespaces()
            assert netns.namespace_prefix(live.identity.slot) in _listed_namespaces()
        assert _alive(live_sleeper)
        assert live.path.exists()
    finally:
        lease.release()


async def test_a_second_run_into_the_same_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = await isolation.claim(SERVERS, out=tmp_path, keep_databases=False)
    try:
        with pytest.raises(isolation.SlotsBusy, match=first.identity.run_id):
            await isolation.claim(SERVERS, out=tmp_path, keep_databases=False)
    finally:
        first.release()


# -- whole runs, through the command line ------------------------------------------------------


def _txc(out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "coordinator.cli", "chaos", "run", "--out", str(out),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen[str], timeout_s: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # unwinds like Ctrl-C: the run cleans up
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"run did not finish in {timeout_s}s:\n{out}\n{err}") from None
    return proc.returncode, out, err


def _summary(out: Path) -> dict[str, object]:
    data = json.loads((out / "summary.json").read_text())
    assert isinstance(data, dict)
    return data


def test_start_up_failures_say_why_and_exit_non_zero(tmp_path: Path) -> None:
    unreachable = tmp_path / "unreachable"
    code, _, err = _finish(_txc(unreachable, "--modes", "saga", "--duration", "5",
                                "--pg", "postgres@127.0.0.1:1"), 120)
    summary = _summary(unreachable)
    assert code != 0 and summary["status"] == "failed"
    assert "creating the databases" in str(summary["stage"])
    assert str(summary["error"]) and str(summary["error"]) in err.strip().splitlines()[-1]
    assert (unreachable / "harness.log").exists()  # its log stays

    bad = tmp_path / "bad-schedule"
    code, _, err = _finish(_txc(bad, "--faults", "partiton:c1@1s"), 60)
    summary = _summary(bad)
    assert code != 0 and "partiton" in str(summary["error"])
    assert err.strip().splitlines()[-1].startswith("txc chaos: failed while checking the schedule")


def _expected_alone(config: RunConfig, run_id: str) -> dict[str, int]:
    """What ``none`` shows with no fault it can feel: every debited out-of-stock transfer is
    told failed with its debit kept (a phantom and a debit without order)."""
    plan = transfers(config.seed, int(config.rate * config.duration_s), f"none-{config.seed}-{run_id}-",
                     config.accounts, config.max_amount, overdraft=config.initial_balance * 10)
    overdrafts = sum(1 for t in plan if t.amount > config.initial_balance)
    stranded = sum(1 for t in plan if t.amount <= config.initial_balance
                   and t.amount % OUT_OF_STOCK_EVERY == 0)
    return {"issued": len(plan), "failed": overdrafts + stranded,
            "violations": stranded + (1 if stranded else 0),  # + money not conserved, once
            "phantom": stranded, "lost": 0, "unknown": 0, "not_terminal": 0}


async def test_two_runs_at_once_report_what_each_would_alone(tmp_path: Path) -> None:
    coordinated, uncoordinated = tmp_path / "coordinated", tmp_path / "none"
    # The faults the coordinated run gets; the none run's one is on a link it never uses.
    runs = [
        _txc(coordinated, "--modes", "saga,2pc", "--duration", "12", "--rate", "8", "--seed", "3",
             "--converge", "45", "--faults",
             "kill:c1@3s+3s, partition:all(c2->etcd*)@7s+6s, kill:etcd2@10s+3s"),
        _txc(uncoordinated, "--modes", "none", "--duration", "20", "--rate", "8", "--seed", "4",
             "--faults", "latency(20,5):client->c1@1s+2s"),
    ]
    finished = await asyncio.gather(*(asyncio.to_thread(_finish, proc, 240) for proc in runs))
    assert [code for code, _, _ in finished] == [0, 0], [err[-2000:] for _, _, err in finished]
    both = _summary(coordinated), _summary(uncoordinated)
    infos = [s["run"] for s in both]
    assert isinstance(infos[0], dict) and isinstance(infos[1], dict)
    assert infos[0]["slot"] != infos[1]["slot"] and infos[0]["databases"] != infos[1]["databases"]
    modes = both[0]["modes"]
    assert isinstance(modes, dict)
    for mode in ("saga", "2pc"):
        row = modes[mode]
        assert row["issued"] == 96 and row["ok"] > 0, row
        assert (row["violations"], row["lost"], row["phantom"], row["not_terminal"], row["in_doubt"]) \
            == (0, 0, 0, 0, 0), (mode, row["violation_list"][:3])
    none = both[1]["modes"]
    assert isinstance(none, dict)
    config = RunConfig(out=uncoordinated, duration_s=20, rate=8, seed=4)
    expected = _expected_alone(config, str(infos[1]["run_id"]))
    assert {k: none["none"][k] for k in expected} == expected
    assert await _none_left(infos)


async def _none_left(infos: list[dict[str, object]]) -> bool:
    """Both runs dropped their databases."""
    found = [await _exists(str(info["databases"]), "-") for info in infos]
    return not any(f["pg"] or f["maria"] for f in found)


def test_state_dir_is_per_user_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TXC_CHAOS_STATE", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    assert isolation.state_dir() == Path(tempfile.gettempdir()) / "txc-chaos-1234"
    monkeypatch.setenv("TXC_CHAOS_STATE", "/somewhere")
    assert isolation.state_dir() == Path("/somewhere")
