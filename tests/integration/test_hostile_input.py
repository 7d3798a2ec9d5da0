"""Hostile and heavy input against a real coordinator on real etcd: maximal plans, large
listings, bad numbers and names, undecodable bytes, impatient callers."""

from __future__ import annotations

import asyncio
import json
import math
import resource
from dataclasses import replace

import grpc
import pytest

from coordinator import ListFilter, Retry, Saga, Step, pb, ppb, ppb_grpc
from coordinator.server import Context, DevEtcd
from tests.support.coordinators import running, server_options

from .conftest import client_for, txc
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration

KIB = 1024
FAST = Retry(max_attempts=5, initial_backoff_s=0.02, max_backoff_s=0.1)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def maximal(p: ScriptedParticipant, gid: str) -> Saga:
    """Four branches of 250 KiB each: inside every documented limit."""
    return Saga([Step(f"b{i}", p.address, "big.do", "big.undo", b"{}" + b" " * (250 * KIB),
                      retry=FAST) for i in range(4)], gid=gid, labels={"size": "max"})


async def test_maximal_sagas_together_neither_wedge_the_log_nor_starve_small_ones(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        peaks = []
        for round_ in range(3):
            big = [c.start_saga(maximal(participant, f"max-{round_}-{i}"), wait=True, timeout_s=30)
                   for i in range(8)]
            small = [c.start_saga(Saga([Step("s", participant.address, "s.do", retry=FAST)],
                                       gid=f"small-{round_}-{i}"), wait=True, timeout_s=30)
                     for i in range(8)]
            replies = await asyncio.gather(*big, *small)
            assert {r.transaction.state for r in replies} == {pb.TX_STATE_COMMITTED}
            peaks.append(rss_mb())
    # Memory is flat: later rounds of the same load do not grow the peak much.
    assert peaks[2] - peaks[0] < 100, peaks


def largest_plan(p: ScriptedParticipant, gid: str) -> Saga:
    """Every limit at once: 64 branches, long names and after lists, 1 MiB of payloads,
    32 labels of 256-byte keys and values."""
    names = [f"{'n' * 125}{i:03d}" for i in range(64)]
    steps = [Step(n, p.address, "x" * 256, "y" * 256, b"{}" + b" " * (16 * KIB - 2),
                  after=names[max(0, i - 63):i], retry=FAST) for i, n in enumerate(names)]
    return Saga(steps, gid=gid, concurrent=True,
                labels={f"k{i:03d}" + "k" * 252: "v" * 256 for i in range(32)})


async def test_the_largest_valid_plan_fits_the_log_and_a_smaller_log_refuses_it_at_start(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        done = await c.start_saga(largest_plan(participant, "largest"), wait=True, timeout_s=60)
        assert done.transaction.state == pb.TX_STATE_COMMITTED
    small_log = server_options(etcd, prefix + "-small", max_request_bytes=1024 * KIB)
    async with running(small_log) as server, client_for(server) as c:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.start_saga(largest_plan(participant, "too-big"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = err.value.details() or ""
        assert details.startswith("branches:") and "bytes" in details and "limit" in details
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await c.get("too-big")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing written


async def test_listings_are_bounded_by_bytes_and_page_through_everything(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant) -> None:
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        starts = [c.start_saga(maximal(participant, f"list-max-{i}"), wait=True, timeout_s=30)
                  for i in range(20)]
        labels = {f"label-{i:02d}-" + "k" * 240: "v" * 256 for i in range(32)}
        starts += [c.start_saga(Saga([Step("s", participant.address, "s.do", retry=FAST)],
                                     gid=f"list-lab-{i:03d}", labels=labels), wait=True)
                   for i in range(140)]
        await asyncio.gather(*starts)
        first = await c.list(page_size=500)
        assert first.next_page_token and len(first.transactions) < 160  # cut by bytes
        listed = [tx.gid async for tx in c.list_all(ListFilter(gid_prefix="list-"))]
        assert len(listed) == 160 and listed == sorted(listed)
        code, out, err = await txc(server.port, "list", "--gid-prefix", "list-", "--limit", "1000",
                                   "--jsonl")
        assert code == 0, err
        assert len(out.splitlines()) == 160


class BigResults(ppb_grpc.ParticipantServicer):
    """Answers OK with a result as large as the payload asks."""

    async def Execute(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        size = json.loads(request.payload)["result_bytes"]
        return ppb.BranchReply(outcome=ppb.OUTCOME_OK, result=b"r" * size)

    async def Compensate(self, request: ppb.BranchRequest, context: Context) -> ppb.BranchReply:
        return ppb.BranchReply(outcome=ppb.OUTCOME_OK)


async def test_a_result_over_the_limit_is_a_visible_participant_error(etcd: DevEtcd,
                                                                      prefix: str) -> None:
    server_ = grpc.aio.server()
    ppb_grpc.add_ParticipantServicer_to_server(BigResults(), server_)
    port = server_.add_insecure_port("127.0.0.1:0")
    await server_.start()
    address = f"127.0.0.1:{port}"
    try:
        async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
            ok = await c.start_saga(Saga([Step("a", address, "a.do", "a.undo",
                                               {"result_bytes": 64 * KIB})], gid="r-ok"), wait=True)
            big = await c.start_saga(Saga([Step("a", address, "a.do", "a.undo",
                                                {"result_bytes": 64 * KIB + 1})], gid="r-big"),
                                     wait=True)
    finally:
        await server_.stop(0)
    assert ok.transaction.state == pb.TX_STATE_COMMITTED
    assert len(ok.transaction.branches[0].result) == 64 * KIB
    assert big.transaction.state == pb.TX_STATE_COMPENSATED  # it may have run: undone
    assert "result of 65537 bytes" in big.transaction.error  # why it compensated


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda r: setattr(r.branches[0].retry, "multiplier", math.nan), "branches[0].retry.multiplier"),
    (lambda r: setattr(r.branches[0].retry, "multiplier", math.inf), "branches[0].retry.multiplier"),
    (lambda r: setattr(r.branches[0].compensation_retry, "multiplier", math.nan),
     "branches[0].compensation_retry.multiplier"),
    (lambda r: r.branches[0].compensation_retry.initial_backoff.FromSeconds(-1),
     "branches[0].compensation_retry.initial_backoff"),
    (lambda r: r.timeout.FromSeconds(8 * 24 * 3600), "timeout"),
    (lambda r: setattr(r, "gid", "abc\n"), "gid"),
    (lambda r: setattr(r, "gid", "g" * 128 + "\n"), "gid"),
    (lambda r: setattr(r.branches[0], "name", "a\n"), "branches[0].name"),
    (lambda r: setattr(r.branches[0], "participant", "127.0.0.1:٤٩٣٣٥"), "branches[0].participant"),
    (lambda r: setattr(r.branches[0], "participant", "127.0.0.1:1\n"), "branches[0].participant"),
])
async def test_bad_numbers_and_names_are_refused_and_nothing_is_kept(
        etcd: DevEtcd, prefix: str, participant: ScriptedParticipant, mutate, field: str  # type: ignore[no-untyped-def]
) -> None:
    request = Saga([Step("a", participant.address, "a.do", retry=Retry(multiplier=2.0))],
                   gid="bad").to_proto()
    mutate(request)
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        for _ in range(2):  # an identical re-send gets the same answer, not ALREADY_EXISTS
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.start_saga(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (err.value.details() or "").startswith(field + ":")
        assert not (await c.list()).transactions
    assert not participant.calls


METHODS = ["StartSaga", "StartTwoPhase", "GetTransaction", "ListTransactions", "WatchTransaction",
           "ReplayTransaction", "SkipBranch", "AbortTransaction"]


async def test_undecodable_requests_get_invalid_argument_on_every_method(etcd: DevEtcd,
                                                                         prefix: str) -> None:
    async with running(server_options(etcd, prefix)) as server:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            for method in METHODS:
                kind = channel.unary_stream if method == "WatchTransaction" else channel.unary_unary
                call = kind(f"/txc.v1.Coordinator/{method}")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    reply = call(b"\xff\xff\xff\x07garbage")
                    if method == "WatchTransaction":
                        async for _ in reply:  # type: ignore[attr-defined]
                            pass
                    else:
                        await reply
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
                details = err.value.details() or ""
                assert "class" not in details and method in details
        finally:
            await channel.close()


async def test_wait_replies_before_the_callers_deadline(etcd: DevEtcd, prefix: str,
                                                        participant: ScriptedParticipant) -> None:
    slow = Saga([Step("a", participant.address, "a.do", "a.undo", {"sleep": 5.0})], gid="slow")
    async with running(server_options(etcd, prefix)) as server, client_for(server) as c:
        reply = await c.start_saga(slow, wait=True, timeout_s=1.5)
    assert reply.transaction.state == pb.TX_STATE_RUNNING


async def test_a_record_the_store_refuses_is_failed_visibly_not_retried_for_ever(
        etcd: DevEtcd, prefix: str) -> None:
    """Limits configured past what this etcd accepts (its --max-request-bytes): the write
    that carries a 1.6 MB result is refused for its size; the saga ends FAILED, saying so."""
    server_ = grpc.aio.server()
    ppb_grpc.add_ParticipantServicer_to_server(BigResults(), server_)
    address = f"127.0.0.1:{server_.add_insecure_port('127.0.0.1:0')}"
    await server_.start()
    options = server_options(etcd, prefix, max_request_bytes=8 * 1024 * KIB)
    options = replace(options, limits=replace(options.limits, max_result_bytes=4 * 1024 * KIB,
                                              max_total_result_bytes=4 * 1024 * KIB))
    try:
        async with running(options) as server, client_for(server) as c:
            reply = await c.start_saga(Saga([Step("a", address, "a.do", "a.undo",
                                                  {"result_bytes": 1600 * KIB})], gid="huge"),
                                       wait=True, timeout_s=20)
            small = await c.start_saga(Saga([Step("a", address, "a.do", "a.undo",
                                                  {"result_bytes": 10})], gid="small"), wait=True)
    finally:
        await server_.stop(0)
    assert reply.transaction.state == pb.TX_STATE_FAILED
    assert "outgrew" in reply.transaction.error
    assert small.transaction.state == pb.TX_STATE_COMMITTED  # the log kept working
