"""Mutual TLS end to end: a coordinator and a participant host that both require client
certificates; the coordinator presents its own to the host, the host's recovery loop its
own to the coordinator; a caller without one is refused by both."""

from __future__ import annotations

import uuid
from dataclasses import replace

import grpc
import pytest

from coordinator import CoordinatorClient, ParticipantClient, pb
from coordinator.participant import HostOptions, Op, TwoPhaseOptions
from coordinator.server import CoordinatorServer, DevEtcd
from tests.support.certificates import Authority
from tests.support.coordinators import server_options

from ._service import build
from .conftest import Db, branch, call

pytestmark = pytest.mark.integration


async def test_two_phase_over_mutual_tls(db: Db, etcd: DevEtcd, gid: str) -> None:
    ca = Authority.create("txc mtls CA")
    options = replace(server_options(etcd, f"/mtls/{uuid.uuid4().hex[:8]}"),
                      tls=ca.issue("coordinator", server=True, client_ca=ca.pem),
                      participant_tls_ca=ca.pem, participant_tls_identity=ca.issue("coordinator"))
    server = CoordinatorServer(options)
    await server.start()
    address = f"localhost:{server.port}"
    host = build(db.engine, HostOptions(
        tls=ca.issue("participant", server=True, client_ca=ca.pem),
        two_phase=TwoPhaseOptions(coordinator=address, coordinator_tls_ca=ca.pem,
                                  coordinator_tls_identity=ca.issue("participant"))))
    participant = f"localhost:{await host.start('127.0.0.1:0')}"
    try:
        async with CoordinatorClient(address, tls_ca=ca.pem, tls_identity=ca.issue("client")) as c:
            reply = await c.start_two_phase(pb.StartTwoPhaseRequest(gid=gid, wait=True, branches=[
                branch("a", participant, {"id": f"{gid}-a", "v": 5})]), timeout_s=30)
        assert reply.transaction.state == pb.TX_STATE_COMMITTED
        assert await db.value(f"{gid}-a") == 5

        # The recovery loop asks the coordinator with its certificate: an unknown gid is
        # presumed aborted (a refused handshake would leave it in doubt instead).
        unknown = f"{gid}-unknown"
        assert (await call(host, Op.PREPARE, unknown, "a", {"id": unknown})).outcome == 1
        report = await host.recover()
        assert [(b.gid, b.branch) for b in report.aborted if b.gid == unknown] == [(unknown, "a")]

        for target in (address, participant):  # no client certificate: refused by both
            async with ParticipantClient(target, tls_ca=ca.pem, timeout_s=3) as anonymous:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await anonymous.call("commit", gid, "a", "rows.put")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await host.stop(0)
        await server.stop(0.5)
