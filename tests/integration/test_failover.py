"""Serving through faults: a client that knows two coordinators is answered by the healthy
one when the other pauses, loses etcd or never speaks, and the one in trouble never acts
again on what it held once its lease is gone (real processes, real etcd)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from txcoord_chaos.proxy import FaultProxy, Partition

from coordinator import CoordinatorClient, Saga, Step, TwoPhase, pb
from coordinator.server import DevEtcd

from .conftest import CoordinatorProcess, two_coordinator_processes
from .participant import ScriptedParticipant

LEASE_S = 2  # CoordinatorProcess runs with --lease-ttl 2
CALL_S = 1.0  # each transaction's first call sleeps this long at the participant
CLIENT_TIMEOUT_S = 8.0


async def _warm_up(client: CoordinatorClient) -> None:
    """Connected to every coordinator (and their health known) before the fault: until
    then, round robin sends everything to the first one ready."""
    await asyncio.sleep(0.5)
    for _ in range(4):
        await client.list(page_size=1)


def _drove(process: CoordinatorProcess, tag: str) -> bool:
    """The process drove some of the ``tag`` transactions (the fault struck something)."""
    return f"gid={tag}-" in process.log_path.read_text()


async def _calls_in_flight(participant: ScriptedParticipant,
                           plans: list[Saga | TwoPhase]) -> None:
    """Until every plan's first call has reached the participant (which sleeps on it)."""
    gids = {plan.gid for plan in plans}
    while {c.key.split("/")[0] for c in participant.calls} < gids:
        await asyncio.sleep(0.01)


def _starts(participant: ScriptedParticipant, tag: str, count: int) -> list[Saga | TwoPhase]:
    saga_payload = {"sleep": CALL_S}
    two_phase_payload = {"prepare_sleep": CALL_S}
    plans: list[Saga | TwoPhase] = []
    for i in range(count):
        plans.append(Saga([Step("a", participant.address, "a.do", "a.undo", saga_payload)],
                          gid=f"{tag}-saga-{i}", timeout_s=30))
        plans.append(TwoPhase([Step("a", participant.address, "a.do", payload=two_phase_payload)],
                              gid=f"{tag}-2pc-{i}", timeout_s=30))
    return plans


async def _start(client: CoordinatorClient, plan: Saga | TwoPhase) -> tuple[pb.Transaction, float]:
    """The settled transaction and when its answer came (monotonic)."""
    if isinstance(plan, Saga):
        reply = await client.start_saga(plan, wait=True, timeout_s=CLIENT_TIMEOUT_S)
    else:
        reply = await client.start_two_phase(plan, wait=True, timeout_s=CLIENT_TIMEOUT_S)
    return reply.transaction, time.monotonic()


async def _through_a_fault(client: CoordinatorClient, plans: list[Saga | TwoPhase],
                           fault: asyncio.Future[float]) -> list[tuple[pb.Transaction, float]]:
    """Start every plan, let ``fault`` strike while they are in flight (it returns when
    it struck), and return each answer with its delay after the strike."""
    answers = [asyncio.create_task(_start(client, plan)) for plan in plans]
    struck = await fault
    return [(tx, at - struck) for tx, at in await asyncio.gather(*answers)]


def _assert_served(answers: list[tuple[pb.Transaction, float]], within_s: float) -> None:
    late = [(tx.gid, round(after, 2)) for tx, after in answers if after > within_s]
    unsettled = [(tx.gid, pb.TxState.Name(tx.state)) for tx, _ in answers
                 if tx.state != pb.TX_STATE_COMMITTED]
    assert not unsettled, f"not committed when answered: {unsettled}"
    assert not late, f"answered later than {within_s} s after the fault: {late}"


def _assert_untouched_after(participant: ScriptedParticipant, tag: str, since: float) -> None:
    """No call for these transactions reached the participant after ``since`` (all were
    settled by then: a later call can only come from the coordinator in trouble), and
    each step took effect once."""
    late = [c for c in participant.calls if c.key.startswith(f"{tag}-") and c.at > since]
    assert not late, f"calls after the transactions settled: {late}"
    effects = {k: n for k, n in participant.effects.items() if k.startswith(f"{tag}-")}
    assert effects and set(effects.values()) == {1}, effects


@contextmanager
def _resumed_after(process: CoordinatorProcess) -> Iterator[None]:
    """SIGCONT on the way out, whatever happens inside (where it is SIGSTOPped)."""
    try:
        yield
    finally:
        process.proc.send_signal(signal.SIGCONT)


async def test_a_paused_coordinator_is_passed_over_and_never_acts_again(
        etcd: DevEtcd, prefix: str, tmp_path: Path, participant: ScriptedParticipant) -> None:
    async with two_coordinator_processes(etcd, prefix, tmp_path) as (first, second), \
            CoordinatorClient([f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"],
                              timeout_s=CLIENT_TIMEOUT_S) as client:
        await _warm_up(client)

        plans = _starts(participant, "pause", 4)

        async def pause_first() -> float:
            await _calls_in_flight(participant, plans)  # both coordinators are driving some
            first.proc.send_signal(signal.SIGSTOP)
            return time.monotonic()

        with _resumed_after(first):
            paused = asyncio.ensure_future(pause_first())
            answers = await _through_a_fault(client, plans, paused)
            settled_at = time.monotonic()
            # Answered through the other: its lease must run out, then one call to make.
            _assert_served(answers, LEASE_S + 2 + CALL_S)
            await asyncio.sleep(0.5)
        await asyncio.sleep(LEASE_S + 1.0)  # resumed: it finds its lease gone
        _assert_untouched_after(participant, "pause", settled_at)
        assert _drove(first, "pause"), "the paused coordinator drove none of the transactions"
        assert first.proc.poll() is None  # it lives on and serves again
        tx = (await client.start_saga(_starts(participant, "after", 1)[0], wait=True)).transaction
        assert tx.state == pb.TX_STATE_COMMITTED


@asynccontextmanager
async def _etcd_through_proxy(etcd: DevEtcd) -> AsyncIterator[FaultProxy]:
    host, port = etcd.endpoint.rsplit(":", 1)
    proxy = FaultProxy("127.0.0.1", 0, host, int(port), "coordinator-etcd")
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_a_coordinator_cut_from_etcd_is_passed_over_and_never_acts_again(
        etcd: DevEtcd, prefix: str, tmp_path: Path, participant: ScriptedParticipant) -> None:
    async with _etcd_through_proxy(etcd) as proxy:
        cut = CoordinatorProcess(proxy.address, prefix, tmp_path)
        healthy = CoordinatorProcess(etcd, prefix, tmp_path)
        try:
            await cut.ready()
            await healthy.ready()
            async with CoordinatorClient([f"127.0.0.1:{cut.port}", f"127.0.0.1:{healthy.port}"],
                                         timeout_s=CLIENT_TIMEOUT_S) as client:
                await _warm_up(client)

                plans = _starts(participant, "cut", 4)

                async def cut_from_etcd() -> float:
                    await _calls_in_flight(participant, plans)
                    proxy.set_fault("both", Partition())
                    return time.monotonic()

                answers = await _through_a_fault(client, plans,
                                                 asyncio.ensure_future(cut_from_etcd()))
                settled_at = time.monotonic()
                _assert_served(answers, LEASE_S + 2 + CALL_S)
                # Starts sent while it is cut off go to the other at once.
                began = time.monotonic()
                tx, _ = await _start(client, _starts(participant, "during", 1)[0])
                assert tx.state == pb.TX_STATE_COMMITTED
                assert time.monotonic() - began < CALL_S + 1.5
                await asyncio.sleep(1.0)
                proxy.heal()
                await asyncio.sleep(LEASE_S + 2.0)  # back: its lease is gone, a new one taken
                _assert_untouched_after(participant, "cut", settled_at)
                assert _drove(cut, "cut"), "the coordinator cut off drove none of them"
        finally:
            cut.stop()
            healthy.stop()


@asynccontextmanager
async def _silent_listener() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word."""
    accepted: list[socket.socket] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.setblocking(False)

    async def accept() -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(server)
            accepted.append(conn)

    task = asyncio.create_task(accept())
    try:
        yield server.getsockname()[1]
    finally:
        task.cancel()
        for conn in accepted:
            conn.close()
        server.close()


async def test_a_first_address_that_never_answers_costs_nothing(
        etcd: DevEtcd, prefix: str, tmp_path: Path, participant: ScriptedParticipant) -> None:
    healthy = CoordinatorProcess(etcd, prefix, tmp_path)
    try:
        await healthy.ready()
        async with _silent_listener() as silent, \
                CoordinatorClient([f"127.0.0.1:{silent}", f"127.0.0.1:{healthy.port}"],
                                  timeout_s=CLIENT_TIMEOUT_S) as client:
            began = time.monotonic()
            answers = await asyncio.gather(*(_start(client, plan)
                                             for plan in _starts(participant, "silent", 3)))
            assert [tx.state for tx, _ in answers] == [pb.TX_STATE_COMMITTED] * 6
            # One participant call of CALL_S each, side by side: well under the client's
            # timeout, which a start sent to the silent one would wait out.
            assert time.monotonic() - began < CALL_S + 4.0 < CLIENT_TIMEOUT_S
    finally:
        healthy.stop()
