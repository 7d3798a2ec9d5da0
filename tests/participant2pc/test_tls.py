"""TLS end to end: a client starts a 2PC transaction on a coordinator serving TLS, which
calls a participant host serving TLS; the host's recovery loop asks the coordinator over
TLS too."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from coordinator import CoordinatorClient, ParticipantClient, pb, ppb
from coordinator.participant import (
    Decision,
    HostOptions,
    Op,
    TlsFiles,
    TwoPhaseOptions,
)
from coordinator.participant.two_phase._recovery import CoordinatorDecisions
from coordinator.server import CoordinatorServer, DevEtcd
from tests.support.coordinators import server_options

from ._service import build
from .conftest import Db, branch, call

pytestmark = pytest.mark.integration


async def test_two_phase_over_tls_both_ways(db: Db, etcd: DevEtcd, gid: str,
                                            tls_certificate: tuple[Path, Path]) -> None:
    cert, key = tls_certificate
    ca, files = cert.read_bytes(), TlsFiles.read(str(cert), str(key))
    options = replace(server_options(etcd, f"/tls/{uuid.uuid4().hex[:8]}"), tls=files,
                      participant_tls_ca=ca)
    server = CoordinatorServer(options)
    await server.start()
    address = f"127.0.0.1:{server.port}"
    host = build(db.engine, HostOptions(tls=files, two_phase=TwoPhaseOptions(
        coordinator=address, coordinator_tls_ca=ca)))
    participant = f"127.0.0.1:{await host.start('127.0.0.1:0')}"
    try:
        async with CoordinatorClient(address, tls_ca=ca) as client:
            request = pb.StartTwoPhaseRequest(gid=gid, wait=True, branches=[
                branch("a", participant, {"id": f"{gid}-a", "v": 3})])
            reply = await client.start_two_phase(request, timeout_s=30)
        assert reply.transaction.state == pb.TX_STATE_COMMITTED
        assert await db.value(f"{gid}-a") == 3

        decisions = CoordinatorDecisions(address, 5.0, ca)  # what the recovery loop asks
        try:
            assert (await decisions.decide(gid)).decision is Decision.COMMIT
        finally:
            await decisions.close()

        # A round run by hand (no loop) asks over TLS too: an unknown gid is presumed aborted.
        idle = build(db.engine, HostOptions(two_phase=TwoPhaseOptions(
            coordinator=address, coordinator_tls_ca=ca)))
        unknown = f"{gid}-unknown"
        assert (await call(idle, Op.PREPARE, unknown, "a", {"id": unknown})).outcome == ppb.OUTCOME_OK
        report = await idle.recover()
        assert [(b.gid, b.branch) for b in report.aborted if b.gid == unknown] == [(unknown, "a")]

        async with ParticipantClient(participant, timeout_s=2) as plaintext:  # TLS only
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await plaintext.call("commit", gid, "a", "rows.put")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await host.stop(0)
        await server.stop(0.5)
