"""The Node.js reference participant (examples/node-participant) conforms, and joins a saga
and a 2PC with the Python SDK's service through a real coordinator."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from google.protobuf.duration_pb2 import Duration

from coordinator import CoordinatorClient, pb
from coordinator._conformance import check, parse_scenario
from coordinator.server import DevEtcd
from tests.support import databases
from tests.support.coordinators import running, server_options

from .conftest import balance, new_account, scenario

pytestmark = pytest.mark.integration


async def test_the_node_reference_conforms(pg: databases.Db, node_service: str) -> None:
    saga, two_phase = await new_account(pg), await new_account(pg)
    report = await check(node_service, parse_scenario(scenario(saga, two_phase)))
    assert report.passed, report.to_text()
    # Every case passes but the notice's: the Node reference serves no notices (the
    # scenario has no 'notify' section), so that one is skipped.
    statuses = {c.name: c.status for c in report.cases}
    assert statuses.pop("notify.once") == "skip", report.to_text()
    assert set(statuses.values()) == {"pass"}, report.to_text()
    assert not any(c.notes for c in report.cases), report.to_text()
    # Sagas undone; 6 committed 2PC debits.
    assert (await balance(pg, saga), await balance(pg, two_phase)) == (1_000, 1_000 - 6)


@pytest.fixture
async def coordinator(etcd: DevEtcd) -> AsyncIterator[str]:
    async with running(server_options(etcd, f"/conf/{uuid.uuid4().hex[:8]}")) as server:
        yield f"127.0.0.1:{server.port}"


def _branch(name: str, address: str, account: str, amount: int, saga: bool) -> pb.Branch:
    retry = pb.RetryPolicy(max_attempts=5, initial_backoff=Duration(nanos=20_000_000))
    return pb.Branch(name=name, participant=address, action="accounts.debit",
                     compensation="accounts.refund" if saga else "",
                     payload=json.dumps({"account": account, "amount": amount}).encode(), retry=retry)


async def test_node_and_python_in_one_saga_and_one_2pc(pg: databases.Db, python_service: str,
                                                       node_service: str, coordinator: str) -> None:
    py, js = await new_account(pg, 100), await new_account(pg, 100)
    gid = f"mixed-{uuid.uuid4().hex[:8]}"

    async def run(kind: str, node_amount: int) -> pb.Transaction:
        saga = kind == "saga"
        branches = [_branch("py", python_service, py, 30, saga),
                    _branch("js", node_service, js, node_amount, saga)]
        async with CoordinatorClient(coordinator, timeout_s=30) as client:
            if saga:
                reply = await client.start_saga(pb.StartSagaRequest(
                    gid=f"{gid}-{kind}-{node_amount}", branches=branches, wait=True))
            else:
                reply = await client.start_two_phase(pb.StartTwoPhaseRequest(
                    gid=f"{gid}-{kind}-{node_amount}", branches=branches, wait=True))
        return reply.transaction

    assert (await run("saga", 10)).state == pb.TX_STATE_COMMITTED
    assert (await run("saga", 500)).state == pb.TX_STATE_COMPENSATED  # Node refuses: Python refunds
    assert (await balance(pg, py), await balance(pg, js)) == (70, 90)
    assert (await run("2pc", 10)).state == pb.TX_STATE_COMMITTED
    assert (await run("2pc", 500)).state == pb.TX_STATE_ABORTED  # Node votes no: Python rolls back
    assert (await balance(pg, py), await balance(pg, js)) == (40, 80)
