"""The Batch stream of txc.v1.Participant on a real host and real databases.

The coordinator's side of the stream is not used here: a minimal ``grpc.aio`` stream_stream
client writes raw messages, so a test can also send what no coordinator would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable

import grpc
import pytest

from coordinator import ppb
from coordinator.participant import ParticipantHost

from .conftest import Db, accounts
from .test_host import Served, account, build_host, rows_for, serve, transfer

pytestmark = pytest.mark.integration

KIND = {"Execute": ppb.CALL_KIND_EXECUTE, "Compensate": ppb.CALL_KIND_COMPENSATE,
        "Prepare": ppb.CALL_KIND_PREPARE}


def call(call_id: int, method: str, gid: str, operation: str, payload: bytes = b"",
         branch: str = "b1", timeout_ms: int = 10_000) -> ppb.BranchCall:
    op = method.lower()
    request = ppb.BranchRequest(gid=gid, branch=branch, operation=operation, payload=payload,
                                idempotency_key=f"{gid}/{branch}/{op}", attempt=1)
    return ppb.BranchCall(id=call_id, kind=KIND[method], request=request, timeout_ms=timeout_ms)


class Stream:
    """One Batch stream, written and read as raw messages."""

    def __init__(self, served: Served) -> None:
        method = served.channel.stream_stream(
            "/txc.v1.Participant/Batch", response_deserializer=ppb.BranchResultBatch.FromString)
        self.rpc = method()
        self.messages: list[ppb.BranchResultBatch] = []

    async def send(self, calls: Iterable[ppb.BranchCall]) -> None:
        await self.rpc.write(ppb.BranchCallBatch(calls=list(calls)).SerializeToString())

    async def results(self, count: int) -> dict[int, ppb.BranchResult]:
        """Read until ``count`` results have come."""
        found: dict[int, ppb.BranchResult] = {}
        while len(found) < count:
            message = await self.rpc.read()
            assert message is not grpc.aio.EOF, f"stream ended after {len(found)} results"
            self.messages.append(message)
            for result in message.results:
                assert result.id not in found, f"two results for call {result.id}"
                found[result.id] = result
        return found

    async def close(self) -> grpc.StatusCode:
        await self.rpc.done_writing()
        assert await self.rpc.read() is grpc.aio.EOF
        return await self.rpc.code()


async def exchange(served: Served, calls: list[ppb.BranchCall]) -> dict[int, ppb.BranchResult]:
    stream = Stream(served)
    await stream.send(calls)
    found = await stream.results(len(calls))
    assert await stream.close() == grpc.StatusCode.OK
    return found


def gids(n: int) -> list[str]:
    return [f"batch-{uuid.uuid4().hex[:10]}" for _ in range(n)]


@pytest.fixture
async def served(db: Db) -> AsyncIterator[Served]:
    s = await serve(build_host(db.engine, call_timeout_s=5.0))
    yield s
    await s.close()


async def test_many_calls_in_one_batch_are_matched_by_id(db: Db, served: Served) -> None:
    acct = await account(db, 1000)
    names = gids(30)
    calls = [call(100 + i, "Execute", gid, "accounts.debit", transfer(acct, 10))
             for i, gid in enumerate(names)]
    calls.append(call(7, "Execute", names[0], "accounts.transmogrify"))  # unknown operation
    found = await exchange(served, calls)
    assert set(found) == {c.id for c in calls}
    for i, gid in enumerate(names):
        result = found[100 + i]
        assert result.status_code == 0 and result.reply.outcome == ppb.OUTCOME_OK, result
        assert await db.count_effects(gid) == 1
    assert found[7].status_code == grpc.StatusCode.UNIMPLEMENTED.value[0]  # misconfigured
    assert "unknown operation 'accounts.transmogrify'" in found[7].status_message
    async with db.engine.connect() as conn:  # every debit applied once: 1000 - 30 * 10
        balance = (await conn.execute(accounts.select().where(accounts.c.id == acct))).one().balance
    assert balance == 700


async def test_bad_calls_fail_alone_and_quick_results_share_a_message(served: Served) -> None:
    gid = gids(1)[0]
    bad = [ppb.BranchCall(id=i, kind=ppb.CALL_KIND_UNSPECIFIED, request=ppb.BranchRequest(gid=gid))
           for i in range(5)]
    bad += [ppb.BranchCall(id=10 + i, kind=ppb.CALL_KIND_EXECUTE) for i in range(5)]  # no request
    good = call(99, "Execute", gid, "accounts.transmogrify")
    stream = Stream(served)
    await stream.send([*bad, good])
    found = await stream.results(11)
    assert await stream.close() == grpc.StatusCode.OK
    for c in bad:
        assert found[c.id].status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert not found[c.id].HasField("reply")
    assert found[99].status_code == grpc.StatusCode.UNIMPLEMENTED.value[0]  # answered alone
    # The ten refusals finish together, so they leave in one message, not ten.
    assert len(stream.messages[0].results) >= 10


async def test_duplicates_in_one_batch_apply_once(db: Db, served: Served) -> None:
    acct = await account(db, 100)
    gid = gids(1)[0]
    twins = [call(i, "Execute", gid, "accounts.debit", transfer(acct, 40)) for i in range(4)]
    found = await exchange(served, twins)
    replies = [found[i].reply for i in range(4)]
    assert all(r.outcome == ppb.OUTCOME_OK for r in replies), replies
    assert all(r == replies[0] for r in replies)  # the stored reply, byte for byte
    assert await db.count_effects(gid) == 1 and await rows_for(db, gid) == 1


async def test_deadline_answers_deadline_exceeded_and_the_work_finishes(db: Db, served: Served) -> None:
    gid = gids(1)[0]
    found = await exchange(served, [call(1, "Execute", gid, "slow.op", b"0.6", timeout_ms=200),
                                    call(2, "Execute", f"{gid}-q", "slow.op", b"0", timeout_ms=2000)])
    assert found[1].status_code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert found[2].reply.outcome == ppb.OUTCOME_OK  # its neighbour was not held up
    await asyncio.sleep(0.8)  # the work went on without the caller and committed
    again = await served.call("Execute", gid, "slow.op", b"0.6", attempt=2, deadline_s=0.3)
    assert (again.outcome, again.result) == (ppb.OUTCOME_OK, b"slow done")
    assert await db.count_effects(gid) == 1


async def test_stream_cut_mid_way_then_unary_retry_finds_the_stored_reply(db: Db, served: Served) -> None:
    names = gids(3)
    stream = Stream(served)
    await stream.send([call(i, "Execute", gid, "slow.op", b"0.5") for i, gid in enumerate(names)])
    await asyncio.sleep(0.2)
    stream.rpc.cancel()  # the coordinator's stream is lost mid-way
    await asyncio.sleep(0.6)
    for gid in names:
        reply = await served.call("Execute", gid, "slow.op", b"0.5", attempt=2, deadline_s=0.3)
        assert (reply.outcome, reply.result) == (ppb.OUTCOME_OK, b"slow done")
        assert await db.count_effects(gid) == 1
    assert await db.open_transactions() == 0


async def test_unary_and_batch_agree(db: Db, served: Served) -> None:
    acct = await account(db, 50)
    ok, refused, undone, null = gids(4)
    calls = [
        call(1, "Execute", ok, "accounts.debit", transfer(acct, 20)),
        call(2, "Execute", refused, "accounts.debit", transfer(acct, 999)),
        call(3, "Execute", undone, "accounts.debit", transfer(acct, 5)),
        call(4, "Compensate", null, "accounts.refund", transfer(acct, 5)),
        call(5, "Execute", ok, "buggy.op", branch="b3"),  # a bug: RETRY, rolled back
        call(6, "Execute", "", "accounts.debit"),  # invalid request
        call(7, "Prepare", ok, "accounts.debit"),  # no prepare handler
        call(8, "Execute", ok, "accounts.debit", b"\xffnot json", branch="b2"),
    ]
    batch = await exchange(served, calls)
    late = await exchange(served, [call(9, "Execute", null, "accounts.debit", transfer(acct, 5))])
    assert "hanging" in late[9].reply.message
    for c in calls:
        method = ppb.CallKind.Name(c.kind).removeprefix("CALL_KIND_").capitalize()
        r = c.request
        if batch[c.id].status_code:  # failed as the unary call fails (a misnamed operation)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await served.call(method, r.gid, r.operation, r.payload, branch=r.branch, attempt=2)
            assert batch[c.id].status_code == failed.value.code().value[0]
            assert batch[c.id].status_message == failed.value.details()
            continue
        unary = await served.call(method, r.gid, r.operation, r.payload, branch=r.branch, attempt=2)
        assert batch[c.id].reply == unary, (c.id, batch[c.id], unary)
    assert await db.count_effects(ok) == 1 and await db.count_effects(undone) == 1


async def test_undecodable_message_ends_its_stream_only(db: Db, served: Served) -> None:
    gid = gids(1)[0]
    stream = Stream(served)
    await stream.send([call(1, "Execute", gid, "slow.op", b"0.3")])
    await stream.rpc.write(b"\xff\xff\xff not a protobuf")
    found = await stream.results(1)  # the call read before the junk is still answered
    assert found[1].reply.outcome == ppb.OUTCOME_OK
    assert await stream.rpc.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The host goes on serving both transports.
    assert (await exchange(served, [call(2, "Execute", f"{gid}-2", "slow.op", b"0")]))[2].reply.outcome \
        == ppb.OUTCOME_OK
    assert (await served.call("Execute", f"{gid}-3", "slow.op", b"0")).outcome == ppb.OUTCOME_OK


async def test_calls_past_max_concurrent_rpcs_are_resource_exhausted(db: Db) -> None:
    s = await serve(build_host(db.engine, call_timeout_s=5.0, max_concurrent_rpcs=3))
    try:
        names = gids(4)
        found = await exchange(s, [call(i, "Execute", gid, "slow.op", b"0.3")
                                   for i, gid in enumerate(names)])
        codes = sorted(r.status_code for r in found.values())
        assert codes == [0, 0, 0, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]]
    finally:
        await s.close()


async def test_stop_answers_calls_in_flight_then_ends_the_stream(db: Db) -> None:
    host: ParticipantHost = build_host(db.engine, call_timeout_s=5.0)
    s = await serve(host)
    gid = gids(1)[0]
    stream = Stream(s)
    await stream.send([call(1, "Execute", gid, "slow.op", b"0.4")])
    await asyncio.sleep(0.1)
    started = asyncio.get_running_loop().time()
    await host.stop(grace_s=3.0)
    assert asyncio.get_running_loop().time() - started < 2.0  # not held for the whole grace
    found = await stream.results(1)
    assert found[1].reply.outcome == ppb.OUTCOME_OK
    assert await stream.rpc.code() == grpc.StatusCode.OK
    await s.client.close()
    await s.channel.close(None)
