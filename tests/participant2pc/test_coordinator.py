"""A real coordinator (StartTwoPhase on a private etcd) driving real participant hosts over
gRPC: on each database alone, and across PostgreSQL and MariaDB in one transaction."""

from __future__ import annotations

import pytest

from coordinator import pb
from coordinator.participant.two_phase import xid_for

from .conftest import Db, Served, branch, start_two_phase

pytestmark = pytest.mark.integration


async def test_all_yes_commits_every_branch(db: Db, hosts: dict[str, Served], coordinator: str,
                                            gid: str) -> None:
    address = hosts[db.kind].address
    tx = await start_two_phase(coordinator, gid, [
        branch("a", address, {"id": f"{gid}-a"}), branch("b", address, {"id": f"{gid}-b", "v": 7})])
    assert tx.state == pb.TX_STATE_COMMITTED
    assert [b.state for b in tx.branches] == [pb.BRANCH_STATE_COMMITTED] * 2
    assert (await db.value(f"{gid}-a"), await db.value(f"{gid}-b")) == (1, 7)
    assert not {xid_for(gid, b) for b in "ab"} & await db.prepared()


async def test_one_no_aborts_every_branch(db: Db, hosts: dict[str, Served], coordinator: str,
                                          gid: str) -> None:
    address = hosts[db.kind].address
    tx = await start_two_phase(coordinator, gid, [
        branch("a", address, {"id": f"{gid}-a"}),
        branch("b", address, {"id": f"{gid}-b", "refuse": True}),
        branch("c", address, {"id": f"{gid}-c"})])
    assert tx.state == pb.TX_STATE_ABORTED
    assert tx.branches[1].state == pb.BRANCH_STATE_VOTED_NO
    assert [await db.value(f"{gid}-{b}") for b in "abc"] == [None, None, None]
    assert not {xid_for(gid, b) for b in "abc"} & await db.prepared()
    assert [await db.xa_state(gid, b) for b in "abc"] == ["aborted", "refused", "aborted"]


async def test_postgresql_and_mariadb_in_one_transaction(dbs: dict[str, Db], hosts: dict[str, Served],
                                                         coordinator: str, gid: str) -> None:
    pg, maria = dbs["postgresql"], dbs["mariadb"]
    debit = hosts["postgresql"].address
    order = hosts["mariadb"].address

    yes = await start_two_phase(coordinator, f"{gid}-yes", [
        branch("debit", debit, {"id": f"{gid}-yes"}), branch("order", order, {"id": f"{gid}-yes"})])
    assert yes.state == pb.TX_STATE_COMMITTED
    assert (await pg.value(f"{gid}-yes"), await maria.value(f"{gid}-yes")) == (1, 1)

    no = await start_two_phase(coordinator, f"{gid}-no", [
        branch("debit", debit, {"id": f"{gid}-no"}),
        branch("order", order, {"id": f"{gid}-no", "refuse": True})])
    assert no.state == pb.TX_STATE_ABORTED
    assert (await pg.value(f"{gid}-no"), await maria.value(f"{gid}-no")) == (None, None)
    assert xid_for(f"{gid}-no", "debit") not in await pg.prepared()
