"""The in-doubt recovery round (decisions stubbed here; tests/participant2pc/test_crash.py
runs it against a real coordinator), the decision rules, XIDs, and the start-up check."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from sqlalchemy import select, text

from coordinator import pb, ppb
from coordinator.participant import (
    Decision,
    Op,
    ParticipantHost,
    TwoPhase,
    TwoPhaseUnavailable,
    check_two_phase,
    create_engine,
)
from coordinator.participant._db.tables import xa as xa_table
from coordinator.participant.two_phase import xid_for
from coordinator.participant.two_phase._recovery import InDoubtResolver, Verdict, verdict_of
from coordinator.participant.two_phase._xid import XID_PREFIX, is_txc_xid, literal
from tests.support import databases

from ._service import build
from .conftest import Db, call

pytestmark = pytest.mark.integration


class StubDecisions:
    def __init__(self, verdicts: dict[str, Verdict]) -> None:
        self.verdicts = verdicts
        self.asked: list[str] = []

    async def decide(self, gid: str) -> Verdict:
        self.asked.append(gid)
        return self.verdicts.get(gid, Verdict(None, "TX_STATE_PREPARING"))

    async def close(self) -> None:
        pass


async def test_round_applies_decisions_and_leaves_the_undecided(
        db: Db, host: ParticipantHost, gid: str, caplog: pytest.LogCaptureFixture) -> None:
    gids = {d: f"{gid}-{d}" for d in ("commit", "abort", "open", "locked")}
    for g in gids.values():
        assert (await call(host, Op.PREPARE, g, "a", {"id": g})).outcome == ppb.OUTCOME_OK
    # The resolver below is another process's: MariaDB lets it finish an XID only once the
    # session that prepared it is gone, and a host keeps that session until phase 2.
    if db.kind == "mariadb":
        kept_by_host = await InDoubtResolver(TwoPhase(db.engine), StubDecisions({
            gids["commit"]: Verdict(Decision.COMMIT, "TX_STATE_COMMITTING")}), 1.0).run_once()
        assert gids["commit"] in {b.gid for b in kept_by_host.left}  # left for a later round
    await host._two_phase.close()  # what the host's stop (or death) does: its sessions end
    stub = StubDecisions({gids["commit"]: Verdict(Decision.COMMIT, "TX_STATE_COMMITTING"),
                          gids["abort"]: Verdict(Decision.ABORT, "NOT_FOUND: presumed abort"),
                          gids["locked"]: Verdict(Decision.COMMIT, "TX_STATE_COMMITTING")})
    caplog.set_level(logging.INFO, logger="coordinator.participant.recovery")
    async with db.engine.connect() as holder, holder.begin():
        # Nothing holds a txc_xa row's lock for long any more: a row locked by someone
        # else does not keep recovery from finishing its branch.
        await holder.execute(select(xa_table.c.xid).where(xa_table.c.xid == xid_for(gids["locked"], "a"))
                             .with_for_update())
        report = await InDoubtResolver(TwoPhase(db.engine), stub, 1.0).run_once()

    def ours(branches: tuple[object, ...]) -> set[str]:
        return {b.gid for b in branches if b.gid in gids.values()}  # type: ignore[attr-defined]

    assert ours(report.in_doubt) == set(gids.values())
    assert ours(report.committed) == {gids["commit"], gids["locked"]}
    assert ours(report.aborted) == {gids["abort"]}
    assert ours(report.left) == {gids["open"]}
    assert report.oldest_age_s >= 0
    assert (await db.value(gids["commit"]), await db.value(gids["abort"])) == (1, None)
    assert "2PC in-doubt branches: " in caplog.text
    assert f"gid={gids['commit']} branch=a committed" in caplog.text
    assert f"gid={gids['abort']} branch=a aborted" in caplog.text
    assert await db.xa_state(gids["abort"], "a") == "aborted"

    still = {b.gid for b in await host.in_doubt()}
    assert gids["open"] in still and gids["commit"] not in still
    assert (await call(host, Op.ABORT, gids["open"], "a", {})).outcome == ppb.OUTCOME_OK
    # The coordinator's own phase 2, after recovery: the same answers as without it.
    assert (await call(host, Op.COMMIT, gids["commit"], "a", {})).message == "already committed"
    assert (await call(host, Op.ABORT, gids["abort"], "a", {})).message == "already aborted"


def _tx(state: int, *decides: str, protocol: int = pb.PROTOCOL_TWO_PHASE) -> pb.Transaction:
    history = [pb.HistoryEntry(action="decide", reason=r) for r in decides]
    return pb.Transaction(gid="g", protocol=protocol, state=state, history=history)  # type: ignore[arg-type]


def test_verdicts_follow_the_transaction_state() -> None:
    assert verdict_of(_tx(pb.TX_STATE_PREPARING)).decision is None
    assert verdict_of(_tx(pb.TX_STATE_COMMITTING)).decision is Decision.COMMIT
    assert verdict_of(_tx(pb.TX_STATE_COMMITTED)).decision is Decision.COMMIT
    assert verdict_of(_tx(pb.TX_STATE_ABORTING)).decision is Decision.ABORT
    assert verdict_of(_tx(pb.TX_STATE_ABORTED)).decision is Decision.ABORT
    failed_commit = _tx(pb.TX_STATE_FAILED, "commit: every branch voted yes")
    assert verdict_of(failed_commit).decision is Decision.COMMIT
    assert verdict_of(_tx(pb.TX_STATE_FAILED, "abort: branch b voted no")).decision is Decision.ABORT
    assert verdict_of(_tx(pb.TX_STATE_FAILED)).decision is None
    assert verdict_of(_tx(pb.TX_STATE_COMMITTED, protocol=pb.PROTOCOL_SAGA)).decision is None


def test_xids_are_deterministic_short_and_prefixed() -> None:
    xid = xid_for("order-1", "debit")
    assert xid == xid_for("order-1", "debit") and xid.startswith(XID_PREFIX)
    assert len(xid.encode()) <= 64 and is_txc_xid(xid)
    assert xid_for("ab", "c") != xid_for("a", "bc")
    long = xid_for("g" * 128, "é" * 128)
    assert len(long) == len(xid)
    assert literal(xid) == f"'{xid}'"
    with pytest.raises(ValueError):
        literal("txc:'; DROP TABLE x; --")


async def test_max_prepared_transactions_zero_is_reported_clearly() -> None:
    """The shared server on 5432 runs with max_prepared_transactions = 0."""
    engine = create_engine(databases.SERVERS["postgresql"])
    try:
        async with engine.connect() as conn:
            setting = int((await conn.execute(text("SHOW max_prepared_transactions"))).scalar_one())
        if setting != 0:
            pytest.skip(f"the shared PostgreSQL has max_prepared_transactions = {setting}, not 0")
        with pytest.raises(TwoPhaseUnavailable, match=r"max_prepared_transactions = 0.*restart"):
            await check_two_phase(engine)
        host = build(engine)
        with pytest.raises(TwoPhaseUnavailable, match="max_prepared_transactions"):
            await host.start("127.0.0.1:0")
        await host.stop(0)
    finally:
        await engine.dispose()


async def test_start_without_the_table_names_the_migration(dbs: dict[str, Db]) -> None:
    server = databases.on_server(dbs["mariadb"].dsn, "test")
    name = f"txc_2pc_bare_{os.getpid()}"
    engine = create_engine(await databases.create_database(server, name))
    try:
        with pytest.raises(TwoPhaseUnavailable, match=r"txc_xa is missing.*txc migrate"):
            await check_two_phase(engine)
    finally:
        await engine.dispose()
        await databases.drop_database(server, name)


async def test_purge_removes_only_old_finished_rows(db: Db, host: ParticipantHost, gid: str) -> None:
    from sqlalchemy import update

    from coordinator.participant import purge_two_phase
    from coordinator.participant._db.sql import db_shifted

    # Finished: committed (its row stays "prepared", its XID is gone), aborted, refused.
    done, open_, young = f"{gid}-done", f"{gid}-open", f"{gid}-young"
    aborted, refused = f"{gid}-aborted", f"{gid}-refused"
    for g in (done, open_, young):
        assert (await call(host, Op.PREPARE, g, "a", {"id": g})).outcome == ppb.OUTCOME_OK
    for g in (done, young):
        assert (await call(host, Op.COMMIT, g, "a", {})).outcome == ppb.OUTCOME_OK
    assert (await call(host, Op.ABORT, aborted, "a", {})).outcome == ppb.OUTCOME_OK
    assert (await call(host, Op.PREPARE, refused, "a", {"refuse": True})).outcome == ppb.OUTCOME_FAILED
    async with db.engine.begin() as conn:
        aged = [xid_for(g, "a") for g in (done, open_, aborted, refused)]
        await conn.execute(update(xa_table).where(xa_table.c.xid.in_(aged))
                           .values(updated_at=db_shifted(conn, -40 * 86_400.0)))
    assert await purge_two_phase(db.engine, older_than_days=30) == 3
    assert [await db.xa_state(g, "a") for g in (done, open_, young, aborted, refused)] == [
        None, "prepared", "prepared", None, None]
    assert (await call(host, Op.ABORT, open_, "a", {})).outcome == ppb.OUTCOME_OK


class HangsOnce(StubDecisions):
    """The first question never gets an answer (a coordinator behind a lost connection)."""

    async def decide(self, gid: str) -> Verdict:
        self.asked.append(gid)
        if len(self.asked) == 1:
            await asyncio.Event().wait()
        return Verdict(Decision.ABORT, "NOT_FOUND: presumed abort")


async def test_a_stuck_round_is_given_up_and_the_next_one_resolves(
        db: Db, host: ParticipantHost, gid: str) -> None:
    assert (await call(host, Op.PREPARE, gid, "a", {"id": gid})).outcome == ppb.OUTCOME_OK
    await host._two_phase.close()  # the host's kept session ends, as when it stops
    stub = HangsOnce({})
    recovery = InDoubtResolver(TwoPhase(db.engine), stub, interval_s=0.05, round_timeout_s=0.5)
    recovery.start()
    try:
        for _ in range(100):
            if xid_for(gid, "a") not in await db.prepared():
                break
            await asyncio.sleep(0.05)
        assert xid_for(gid, "a") not in await db.prepared()
        assert stub.asked.count(gid) >= 2  # asked again after the stuck round was dropped
        assert await db.xa_state(gid, "a") == "aborted"
    finally:
        await recovery.stop()
