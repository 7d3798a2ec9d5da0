"""The transaction log on the harness' 3-member etcd cluster: losing any one member (the
leader included) loses no decision and stops no writes for longer than an election."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from txcoord_chaos.etcd_cluster import MEMBERS, EtcdCluster
from txcoord_chaos.topology import Process, _wait_healthy

from coordinator.domain.records import BranchPlan, Protocol, TxRecord, TxState, new_record
from coordinator.log import EtcdLog, EtcdOptions, LogError, LostOwnership

pytestmark = pytest.mark.integration


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[EtcdCluster, dict[str, Process]]]:
    etcd = EtcdCluster(tmp_path / "etcd")
    procs = {m: Process(m, etcd.argv(m), tmp_path / f"{m}.log") for m in MEMBERS}
    for p in procs.values():
        p.start()
    try:
        await _wait_healthy(etcd.client_ports, timeout_s=30)
        yield etcd, procs
    finally:
        for p in procs.values():
            p.stop()


def _record(gid: str) -> TxRecord:
    plan = (BranchPlan(name="a", participant="127.0.0.1:1", action="a.do"),)
    return new_record(gid=gid, protocol=Protocol.TWO_PHASE, plan=plan, now=time.time(),
                      timeout_s=30)


async def _leader(etcd: EtcdCluster) -> str:
    import etcd3aio
    for name, port in etcd.client_ports.items():
        client = etcd3aio.Etcd3Client([f"127.0.0.1:{port}"])
        await client.connect()
        try:
            status = await client.maintenance.status()  # type: ignore[union-attr]
            if status.leader == status.header.member_id:
                return name
        finally:
            await client.close()
    raise AssertionError("no leader")


async def _create_and_decide(log: EtcdLog, gid: str) -> None:
    created = await log.create(_record(gid))
    await log.write(created.stored, replace(created.stored.record, state=TxState.ABORTING,
                                            decision="abort"))


async def test_writes_go_on_when_any_member_dies_and_nothing_is_lost(
        cluster: tuple[EtcdCluster, dict[str, Process]]) -> None:
    etcd, procs = cluster
    endpoints = tuple(f"127.0.0.1:{p}" for p in etcd.client_ports.values())
    log = EtcdLog(EtcdOptions(endpoints=endpoints, request_timeout_s=2.0), "coordinator-a")
    await log.open()
    try:
        await _create_and_decide(log, "g-before")
        for victim in ("leader", "follower"):
            leader = await _leader(etcd)
            name = leader if victim == "leader" else next(m for m in MEMBERS if m != leader)
            procs[name].kill()
            started = time.monotonic()
            while True:  # a write may first meet the dead member, or wait for an election
                try:
                    await _create_and_decide(log, f"g-{victim}")
                    break
                except (LogError, LostOwnership):
                    assert time.monotonic() - started < 10, f"no write for 10 s after {name} died"
                    await asyncio.sleep(0.1)
            assert log.lease_alive()
            procs[name].start()
            await _wait_healthy(etcd.client_ports, timeout_s=30)
        for gid in ("g-before", "g-leader", "g-follower"):
            stored = await log.get(gid)
            assert stored is not None and stored.record.state is TxState.ABORTING, gid
    finally:
        await log.close()
