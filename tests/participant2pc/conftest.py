"""Real databases (a private PostgreSQL cluster with prepared transactions enabled, the
shared MariaDB) and a real coordinator on a private etcd, for the participant's 2PC.

TXC_TEST_PG2PC_DSN points the tests at an existing PostgreSQL server instead of the
private cluster (it must have max_prepared_transactions > 0); TXC_TEST_MYSQL_DSN at
another MariaDB/MySQL server.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text, update

from coordinator import CoordinatorClient, pb, ppb
from coordinator.participant import HostOptions, Op, ParticipantHost, TwoPhase
from coordinator.participant._db.tables import barrier
from coordinator.participant._db.tables import xa as xa_table
from coordinator.participant.two_phase import xid_for
from coordinator.server import DevEtcd
from tests.support import databases
from tests.support.coordinators import running, server_options

from ._pg import PrivatePostgres
from ._service import BUILT, build, business, rows

pytestmark = pytest.mark.integration

KINDS = ("mariadb", "postgresql")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL server DSN with max_prepared_transactions > 0."""
    if os.environ.get("TXC_TEST_PG2PC_DSN"):
        yield os.environ["TXC_TEST_PG2PC_DSN"]
        return
    cluster = PrivatePostgres().start()
    try:
        yield cluster.dsn
    finally:
        cluster.stop()


@dataclass(frozen=True)
class Db(databases.Db):
    async def prepared(self) -> set[str]:
        """Every XID the server holds prepared (MySQL: server-wide)."""
        async with self.engine.connect() as conn:
            if self.kind == "postgresql":
                found = await conn.execute(text("SELECT gid FROM pg_prepared_xacts"))
                return {gid for (gid,) in found}
            found = await conn.exec_driver_sql("XA RECOVER")
            return {bytes(r[3]).decode() if not isinstance(r[3], str) else r[3] for r in found}

    async def value(self, row_id: str) -> int | None:
        async with self.engine.connect() as conn:
            found = await conn.execute(select(rows.c.v).where(rows.c.id == row_id))
            return found.scalar_one_or_none()

    async def add_row(self, v: int = 0) -> str:
        row_id = f"r-{uuid.uuid4().hex[:10]}"
        async with self.engine.begin() as conn:
            await conn.execute(rows.insert().values(id=row_id, v=v))
        return row_id

    async def can_update(self, row_id: str) -> bool:
        """Update the row from another connection with a short lock timeout: False if a
        (prepared) transaction still holds its lock."""
        async with self.engine.connect() as conn:
            try:
                async with conn.begin():
                    if self.kind == "postgresql":
                        await conn.execute(text("SET LOCAL lock_timeout = '300ms'"))
                    else:
                        await conn.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
                    await conn.execute(update(rows).where(rows.c.id == row_id).values(v=rows.c.v))
                return True
            except sa_exc.DBAPIError as exc:  # 55P03 lock_not_available / 1205 lock wait timeout
                if "lock" not in str(exc.orig).lower():
                    raise
                return False
            finally:
                if self.kind != "postgresql":
                    await conn.invalidate()  # drop the session setting with the connection

    async def xa_state(self, gid: str, branch: str) -> str | None:
        """The branch's ``txc_xa`` state as stored (a committed branch stays "prepared")."""
        async with self.engine.connect() as conn:
            found = await conn.execute(select(xa_table.c.state).where(xa_table.c.xid == xid_for(gid, branch)))
            return found.scalar_one_or_none()

    async def outcome(self, gid: str, branch: str) -> str | None:
        """What became of the branch: its stored state, or "committed" once the witness row
        written inside its prepared transaction is visible."""
        async with self.engine.connect() as conn:
            witness = await conn.execute(select(barrier.c.id).where(
                barrier.c.gid == gid, barrier.c.branch == branch, barrier.c.op == "prepare"))
            if witness.first() is not None:
                return "committed"
        return await self.xa_state(gid, branch)


@pytest.fixture(scope="session")
async def dbs(pg_server: str) -> AsyncIterator[dict[str, Db]]:
    """A migrated database on each server for the whole session (tests use fresh gids)."""
    name = f"txc_2pc_{os.getpid()}"
    servers = {"postgresql": pg_server, "mariadb": databases.SERVERS["mariadb"]}
    async with AsyncExitStack() as stack:
        made: dict[str, Db] = {}
        for kind, server in servers.items():
            made[kind] = await stack.enter_async_context(databases.migrated(
                kind, server, name, business, Db, pool_size=20, max_overflow=10))
            # Runs before the database is dropped, which its prepared XIDs would prevent.
            stack.push_async_callback(_roll_back_leftovers, made[kind])
        yield made


async def _roll_back_leftovers(db: Db) -> None:
    """Prepared XIDs a failed test left behind would keep the database from being dropped."""
    for branch in await TwoPhase(db.engine).in_doubt():
        statement = "XA ROLLBACK '{}'" if db.kind == "mariadb" else "ROLLBACK PREPARED '{}'"
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql(statement.format(branch.xid))


@pytest.fixture(params=KINDS)
def db(request: pytest.FixtureRequest, dbs: dict[str, Db]) -> Db:
    return dbs[request.param]


@pytest.fixture(autouse=True)
async def _sessions_given_back() -> AsyncIterator[None]:
    """MariaDB: the sessions the test's hosts keep (prepared branches', spares) go back to
    the pool after each test, as a host's stop does; none is left for the engine's dispose."""
    yield
    for host in BUILT:
        await host._two_phase.close()


# -- participant hosts ----------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    host: ParticipantHost
    address: str


@pytest.fixture(scope="session")
async def hosts(dbs: dict[str, Db]) -> AsyncIterator[dict[str, Served]]:
    """One host per database, serving gRPC, without a recovery loop (the tests prepare
    branches the coordinator never heard of; a loop would abort them)."""
    served: dict[str, Served] = {}
    try:
        for kind, db in dbs.items():
            host = build(db.engine, HostOptions(call_timeout_s=10.0))
            port = await host.start("127.0.0.1:0")
            served[kind] = Served(host, f"127.0.0.1:{port}")
        yield served
    finally:
        for s in served.values():
            await s.host.stop(0)


@pytest.fixture
def host(db: Db, hosts: dict[str, Served]) -> ParticipantHost:
    return hosts[db.kind].host


def request(gid: str, branch: str, op: Op, body: dict[str, object],
            operation: str = "rows.put") -> ppb.BranchRequest:
    return ppb.BranchRequest(gid=gid, branch=branch, operation=operation,
                             payload=json.dumps(body).encode(),
                             idempotency_key=f"{gid}/{branch}/{op.value}", attempt=1)


async def call(host: ParticipantHost, op: Op, gid: str, branch: str, body: dict[str, object],
               operation: str = "rows.put") -> ppb.BranchReply:
    return await host.handle(op, request(gid, branch, op, body, operation))


# -- a real coordinator ----------------------------------------------------------------


@pytest.fixture(scope="session")
async def coordinator(etcd: DevEtcd) -> AsyncIterator[str]:
    """A coordinator in this process; its address."""
    async with running(server_options(etcd, f"/p2pc/{uuid.uuid4().hex[:8]}")) as server:
        yield f"127.0.0.1:{server.port}"


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def branch(name: str, address: str, body: dict[str, object], operation: str = "rows.put",
           max_attempts: int = 0) -> pb.Branch:
    retry = pb.RetryPolicy(max_attempts=max_attempts, initial_backoff=_duration(0.02),
                           max_backoff=_duration(0.2))
    return pb.Branch(name=name, participant=address, action=operation,
                     payload=json.dumps(body).encode(), retry=retry, timeout=_duration(10))


async def start_two_phase(coordinator: str, gid: str, branches: list[pb.Branch], *,
                          wait: bool = True, deadline: float = 20.0) -> pb.Transaction:
    async with CoordinatorClient(coordinator, timeout_s=30) as client:
        req = pb.StartTwoPhaseRequest(gid=gid, branches=branches, timeout=_duration(deadline),
                                      wait=wait)
        response = await client.start_two_phase(req)
    return response.transaction
