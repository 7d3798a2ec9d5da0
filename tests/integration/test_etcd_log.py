"""EtcdLog details the service tests do not reach: what a coordinator finds it owns."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from coordinator.domain.records import BranchPlan, Protocol, TxState, new_record
from coordinator.log import EtcdLog, EtcdOptions
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
