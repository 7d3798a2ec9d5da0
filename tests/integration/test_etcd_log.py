"""EtcdLog details the service tests do not reach: what a coordinator finds it owns."""

from __future__ import annotations

import time
from dataclasses import replace

import etcd3aio
import pytest

from coordinator.domain.records import BranchPlan, Protocol, TxState, new_record
from coordinator.log import EtcdLog, EtcdOptions, LogError
from coordinator.server import DevEtcd

pytestmark = pytest.mark.integration


async def test_mine_lists_the_unfinished_transactions_this_coordinator_owns(
        etcd: DevEtcd, prefix: str) -> None:
    options = EtcdOptions(endpoints=(etcd.endpoint,), prefix=prefix)
    a, b = EtcdLog(options, "coordinator-a"), EtcdLog(options, "coordinator-b")
    await a.open()
    await b.open()
    try:
        plan = (BranchPlan(name="x", participant="127.0.0.1:1", action="x.do"),)
        created = {}
        for gid, log in (("g1", a), ("g2", a), ("g3", b)):
            record = new_record(gid=gid, protocol=Protocol.SAGA, plan=plan, now=time.time(),
                                timeout_s=30)
            created[gid] = (await log.create(record)).stored
        assert (await a.mine(), await b.mine()) == (["g1", "g2"], ["g3"])
        done = replace(created["g1"].record, state=TxState.COMMITTED)
        await a.write(created["g1"], done)
        assert await a.mine() == ["g2"]  # a finished record has no owner any more
    finally:
        await a.close()
        await b.close()


async def raw(etcd: DevEtcd, key: str) -> bytes | None:
    """A key's value as etcd holds it, read with a client of its own."""
    async with etcd3aio.Etcd3Client([etcd.endpoint]) as client:
        assert client.kv is not None
        reply = await client.kv.get(key.encode())
    return bytes(reply.kvs[0].value) if reply.kvs else None


async def test_payloads_are_written_once_read_back_whole_and_dropped_when_finished(
        etcd: DevEtcd, prefix: str) -> None:
    log = EtcdLog(EtcdOptions(endpoints=(etcd.endpoint,), prefix=prefix), "coordinator-a")
    await log.open()
    try:
        plan = (BranchPlan(name="x", participant="127.0.0.1:1", action="x.do", payload=b"p" * 9000),
                BranchPlan(name="y", participant="127.0.0.1:1", action="y.do"))
        record = new_record(gid="big", protocol=Protocol.SAGA, plan=plan, now=time.time(),
                            timeout_s=30)
        stored = (await log.create(record)).stored
        moved = await log.write(stored, replace(record, error="a transition", seq=stored.record.seq))
        assert await log.get("big") == moved  # payloads read back with the state
        [listed] = await log.scan()
        assert listed.record.plan[0].payload == b""  # a listing reads states only
        state = await raw(etcd, f"{prefix}/tx/big")
        assert state is not None and len(state) < 2000  # transitions rewrite no payloads
        again = await log.create(record)
        assert not again.created and again.stored.record == moved.record
        done = await log.write(moved, replace(moved.record, state=TxState.COMMITTED))
        assert await raw(etcd, f"{prefix}/payload/big") is None
        finished = await log.get("big")
        assert finished is not None and finished.revision == done.revision
        assert finished.record.same_plan(record)  # a repeated start still matches
    finally:
        await log.close()


async def test_a_lease_etcd_no_longer_knows_stops_the_coordinator_acting_at_once(
        etcd: DevEtcd, prefix: str) -> None:
    """Its lease expired while it could not renew it (a pause): the first refusal says so,
    without waiting for the keep-alive loop (every 10 s with this 60 s lease)."""
    log = EtcdLog(EtcdOptions(endpoints=(etcd.endpoint,), prefix=prefix, lease_ttl_s=60), "paused")
    await log.open()
    try:
        async with etcd3aio.Etcd3Client([etcd.endpoint]) as other:
            assert other.kv is not None and other.lease is not None
            member = (await other.kv.get(f"{prefix}/member/paused".encode())).kvs[0]
            await other.lease.revoke(member.lease)  # as if it had expired
        assert log.lease_alive()
        record = new_record(gid="after-pause", protocol=Protocol.SAGA, now=time.time(),
                            timeout_s=30, plan=(BranchPlan("x", "127.0.0.1:1", "x.do"),))
        with pytest.raises(LogError, match="requested lease not found"):
            await log.create(record)
        assert not log.lease_alive()  # attempts and scans hold until a new lease
    finally:
        await log.close()
