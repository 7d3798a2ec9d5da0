"""A coordinator serving TLS: clients that check it against the CA get in, plaintext
clients do not; the operator CLI talks TLS with --tls-ca."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from coordinator import CoordinatorClient, Saga, Step, pb
from coordinator.participant import OutboxMessage, StartSagaSender
from coordinator.participant.outbox import START_SAGA
from coordinator.server import DevEtcd, TlsFiles
from tests.support.coordinators import running, server_options

from .conftest import txc
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration


async def test_tls_clients_get_in_and_plaintext_ones_do_not(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant,
        tls_certificate: tuple[Path, Path]) -> None:
    cert, key = tls_certificate
    options = replace(server_options(etcd, prefix), tls=TlsFiles.read(str(cert), str(key)))
    async with running(options) as server:
        address = f"127.0.0.1:{server.port}"
        async with CoordinatorClient(address, tls_ca=cert.read_bytes()) as client:
            saga = Saga([Step("a", participant.address, "a.do", "a.undo", {})], gid="over-tls")
            reply = await client.start_saga(saga, wait=True)
            assert reply.transaction.state == pb.TX_STATE_COMMITTED
        async with CoordinatorClient(address, timeout_s=2.0) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await plaintext.get("over-tls")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        # The outbox's sender, too, reaches a coordinator that serves TLS.
        sender = StartSagaSender(address, tls_ca=cert.read_bytes())
        try:
            saga = Saga([Step("a", participant.address, "a.do", "a.undo", {})], gid="from-outbox")
            await sender(OutboxMessage(1, START_SAGA, saga.to_proto().SerializeToString(), 1))
        finally:
            await sender.close()
        async with CoordinatorClient(address, tls_ca=cert.read_bytes()) as client:
            assert (await client.get("from-outbox")).gid == "from-outbox"

        code, out, _ = await txc(server.port, "--tls-ca", str(cert), "show", "over-tls")
        assert code == 0 and "COMMITTED" in out
        code, _, err_text = await txc(server.port, "--timeout", "2", "show", "over-tls")
        assert code == 4 and "unreachable" in err_text
