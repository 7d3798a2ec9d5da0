"""Mutual TLS: the coordinator's port requires client certificates (no certificate, one
from another CA and an expired one are refused), operator actions and protected reads are
tied to a certificate's name with separate rights, and the coordinator presents its own
certificate to participants that require one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import grpc
import pytest

from coordinator import CoordinatorClient, Retry, Saga, Step, TlsFiles, pb
from coordinator.server import DevEtcd, Operators
from tests.support.certificates import Authority
from tests.support.coordinators import running, server_options

from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration
FAST = Retry(max_attempts=3, initial_backoff_s=0.02, max_backoff_s=0.05)
TOKEN = "reader-token-0123456789"


@dataclass(frozen=True)
class Pki:
    ca: Authority
    other: Authority


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki(Authority.create("txc test CA"), Authority.create("someone else's CA"))


@pytest.fixture
async def secured(etcd: DevEtcd, prefix: str, pki: Pki,
                  participant: ScriptedParticipant) -> AsyncIterator[int]:
    """A coordinator requiring client certificates, with reads protected: alice may read
    and act (certificate), bob only read (certificate), carol only read (token)."""
    operators = Operators.parse(f"carol {TOKEN} read").with_certificates(
        "alice alice.example\nbob bob.example read")
    options = replace(server_options(etcd, prefix), operators=operators, protect_reads=True,
                      tls=pki.ca.issue("coordinator", server=True, client_ca=pki.ca.pem))
    async with running(options) as server:
        yield server.port


def client(port: int, pki: Pki, identity: TlsFiles | None, token: str | None = None,
           ) -> CoordinatorClient:
    return CoordinatorClient(f"localhost:{port}", tls_ca=pki.ca.pem, tls_identity=identity,
                             token=token, timeout_s=5)


@pytest.mark.parametrize("who", ["no certificate", "another CA", "expired"])
async def test_callers_without_a_valid_client_certificate_are_refused(
        secured: int, pki: Pki, who: str) -> None:
    identity = {"no certificate": None, "another CA": pki.other.issue("alice.example"),
                "expired": pki.ca.issue("alice.example", expired=True)}[who]
    async with client(secured, pki, identity) as c:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.list()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed


async def test_rights_follow_the_certificate_name_and_the_token(
        secured: int, pki: Pki, participant: ScriptedParticipant) -> None:
    broken = Saga([Step("a", participant.address, "a.do", "a.undo", {"undo_refuse": True},
                        retry=FAST), Step("b", participant.address, "b.do", "b.undo",
                                          {"refuse": True}, retry=FAST)], gid="mtls-failed")
    alice, bob = pki.ca.issue("alice.example"), pki.ca.issue("bob.example")
    stranger = pki.ca.issue("stranger.example")  # a valid certificate, not an operator
    async with client(secured, pki, alice) as a, client(secured, pki, bob) as b, \
            client(secured, pki, stranger) as s, client(secured, pki, stranger, TOKEN) as carol:
        assert (await a.start_saga(broken, wait=True)).transaction.state == pb.TX_STATE_FAILED
        assert (await b.get("mtls-failed")).state == pb.TX_STATE_FAILED
        assert (await carol.get("mtls-failed")).state == pb.TX_STATE_FAILED
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await s.get("mtls-failed")
        assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for reader in (b, carol):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await reader.replay("mtls-failed", "not mine to do")
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        participant.healed = True
        replayed = await a.replay("mtls-failed", "refund fixed")
        assert next(h.actor for h in replayed.history if h.action == "replay").startswith(
            "operator:alice")


async def test_the_coordinator_presents_its_certificate_to_participants_that_require_one(
        etcd: DevEtcd, prefix: str, pki: Pki) -> None:
    strict = await ScriptedParticipant().start(
        tls=pki.ca.issue("participant", server=True, client_ca=pki.ca.pem))
    saga = Saga([Step("a", strict.address.replace("127.0.0.1", "localhost"), "a.do", "a.undo",
                      retry=FAST)], gid="to-strict")
    base = replace(server_options(etcd, prefix), participant_tls_ca=pki.ca.pem)
    try:
        anonymous = replace(base, participant_transport="unary")
        async with running(anonymous) as server, CoordinatorClient(f"127.0.0.1:{server.port}") as c:
            refused = await c.start_saga(replace(saga, gid="anonymous"), wait=True)
        known = replace(base, participant_tls_identity=pki.ca.issue("coordinator-1"))
        async with running(known) as server, CoordinatorClient(f"127.0.0.1:{server.port}") as c:
            accepted = await c.start_saga(saga, wait=True)
    finally:
        await strict.stop()
    assert refused.transaction.state != pb.TX_STATE_COMMITTED
    assert "UNAVAILABLE" in refused.transaction.error
    assert accepted.transaction.state == pb.TX_STATE_COMMITTED
    assert strict.effects["to-strict/a/execute"] == 1 and not strict.effects["anonymous/a/execute"]
