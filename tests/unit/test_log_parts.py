"""The log's codec and group-commit batcher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace

import pytest

from coordinator.domain import saga
from coordinator.domain.records import (
    BranchPlan,
    BranchState,
    Protocol,
    RetryPolicy,
    TxRecord,
    new_record,
)
from coordinator.log._batch import Batcher
from coordinator.log._codec import decode, encode, encode_payloads, with_payloads


def test_codec_round_trips_every_field() -> None:
    plan = (BranchPlan("a", "h:1", "a.do", "a.undo", b"\x00\xffbin", (), 2.5,
                       RetryPolicy(3, 0.2, 4.0, 1.5), RetryPolicy(9, 0.3, 5.0, 1.25)),
            BranchPlan("b", "h:2", "b.do", after=("a",)))
    trace = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
             ("tracestate", "congo=t61rcWkgMzE"))
    rec = new_record(gid="g-1", protocol=Protocol.SAGA, plan=plan, now=1.25, timeout_s=9,
                     concurrent=True, labels={"team": "pay"}, trace=trace)
    rec = saga.start(rec, 2.0).record
    undone = replace(rec.branches[0], state=BranchState.COMPENSATED, null_compensation=True)
    rec = replace(rec, cause="branch b failed: no", branches=(undone, *rec.branches[1:]))
    assert with_payloads(decode(encode(rec)), encode_payloads(rec)) == rec
    state_only = decode(encode(rec))
    assert [p.payload for p in state_only.plan] == [b"", b""]
    assert state_only.same_plan(rec)  # the digest stands in for the payloads
    assert state_only.same_plan(replace(rec, trace=()))  # a retried start from another trace
    assert b"trace" not in encode(replace(rec, trace=()))  # untraced records pay nothing


def test_announced_intents_are_a_version_an_older_coordinator_refuses() -> None:
    """An older coordinator would take an announced PENDING branch for one that never ran
    and skip its compensation: it must refuse the record (its decode raises on an unknown
    version) rather than misread it. Records without the announcement stay version 1."""
    plan = tuple(BranchPlan(n, "h:1", f"{n}.do", f"{n}.undo") for n in ("a", "b"))
    created = saga.start(new_record(gid="g-ahead", protocol=Protocol.SAGA, plan=plan, now=1.0,
                                    timeout_s=9), 1.0).record
    assert created.intents_ahead and json.loads(encode(created))["v"] == 2
    assert decode(encode(created)) == created
    plain = replace(created, intents_ahead=False)
    assert json.loads(encode(plain))["v"] == 1 and not decode(encode(plain)).intents_ahead
    with pytest.raises(ValueError, match="unsupported record version 3"):
        decode(encode(created).replace(b'"v":2', b'"v":3'))


def test_a_record_stored_before_compensation_retry_gets_the_until_acknowledged_default() -> None:
    plan = (BranchPlan("a", "h:1", "a.do", "a.undo", retry=RetryPolicy(max_attempts=3)),)
    rec = new_record(gid="g-old", protocol=Protocol.SAGA, plan=plan, now=1.0, timeout_s=9)
    doc = json.loads(encode(rec))
    for p in doc["plan"]:
        del p["compensation_retry"]  # as written by a coordinator of an earlier version
    old = decode(json.dumps(doc).encode())
    assert old.plan[0].compensation_retry == RetryPolicy()  # max_attempts 0: until acknowledged
    assert old.plan[0].retry.max_attempts == 3


def test_an_empty_payload_keeps_its_place_and_a_damaged_value_is_refused() -> None:
    plan = (BranchPlan("a", "h:1", "a.do"), BranchPlan("b", "h:1", "b.do", payload=b"x" * 70_000))
    rec = new_record(gid="g", protocol=Protocol.TWO_PHASE, plan=plan, now=1.0, timeout_s=1)
    assert with_payloads(decode(encode(rec)), encode_payloads(rec)) == rec
    assert len(encode_payloads(rec)) == 70_008  # raw, not base64
    with pytest.raises(ValueError):
        with_payloads(decode(encode(rec)), encode_payloads(rec)[:-1])


def test_a_different_payload_is_a_different_plan() -> None:
    def record(payload: bytes) -> TxRecord:
        plan = (BranchPlan("a", "h:1", "a.do", payload=payload),)
        return new_record(gid="g", protocol=Protocol.SAGA, plan=plan, now=1.0, timeout_s=1)
    stored = decode(encode(record(b"one")))  # finished: the log no longer keeps payloads
    assert stored.same_plan(record(b"one")) and not stored.same_plan(record(b"two"))


async def test_batcher_groups_concurrent_items_and_keeps_equal_keys_apart() -> None:
    batches: list[list[str]] = []

    async def flush(items: Sequence[str]) -> list[str]:
        batches.append(list(items))
        await asyncio.sleep(0.01)
        return [i.upper() for i in items]

    batcher: Batcher[str, str] = Batcher(flush, max_batch=3, key=lambda s: s[0])
    results = await asyncio.gather(*(batcher.submit(x) for x in
                                     ["a1", "b1", "c1", "d1", "a2", "e1"]))
    assert results == ["A1", "B1", "C1", "D1", "A2", "E1"]
    assert batches[0] == ["a1", "b1", "c1"]  # same-tick submits share a request, up to max
    assert all(len(b) <= 3 for b in batches)
    assert all(len({i[0] for i in b}) == len(b) for b in batches)
    assert len(batches) < 6


async def test_batcher_hands_a_failure_to_every_waiter_and_recovers() -> None:
    calls = 0

    async def flush(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store down")
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush, max_batch=8, key=lambda i: i)
    first = await asyncio.gather(batcher.submit(1), return_exceptions=True)
    assert isinstance(first[0], ConnectionError)
    assert await batcher.submit(2) == 2


async def test_batcher_cancelled_flush_leaves_no_waiter_hanging() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        await asyncio.sleep(10)
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush, max_batch=8, key=lambda i: i)
    waiter = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.01)
    assert batcher._drainers
    for drainer in batcher._drainers:
        drainer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 1)


async def test_batcher_a_stuck_request_holds_up_neither_other_keys_nor_reorders_its_own() -> None:
    release = asyncio.Event()
    in_flight: list[set[int]] = []
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        keys = {i // 10 for i in items}
        assert not any(keys & other for other in in_flight), "a key in two requests at once"
        in_flight.append(keys)
        try:
            if 1 in items:
                await release.wait()  # this request hangs, as on an unreachable member
            flushed.append(list(items))
            return list(items)
        finally:
            in_flight.remove(keys)

    batcher: Batcher[int, int] = Batcher(flush, max_batch=8, key=lambda i: i // 10,
                                         max_in_flight=4)
    stuck = asyncio.ensure_future(batcher.submit(1))
    while not in_flight:  # the stuck request is on the wire
        await asyncio.sleep(0)
    later = await asyncio.wait_for(asyncio.gather(batcher.submit(21), batcher.submit(31)), 1)
    assert later == [21, 31]  # went past the stuck request (once it was in flight stall_s)
    same_key = asyncio.ensure_future(batcher.submit(2))  # key 0, like the stuck one
    await asyncio.sleep(0.01)
    assert not same_key.done()
    release.set()
    assert await stuck == 1 and await same_key == 2
    assert flushed.index([1]) < flushed.index([2])


async def test_batcher_under_load_sends_one_request_at_a_time_and_groups_what_waits() -> None:
    """While requests are quick only one is in flight: what arrives meanwhile waits and
    goes together (a second request at once would carry one item each)."""
    in_flight = 0
    most = 0
    flushed: list[int] = []

    async def flush(items: Sequence[int]) -> list[int]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.002)
        in_flight -= 1
        flushed.append(len(items))
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush, max_batch=64, key=lambda i: i, max_in_flight=4)

    async def writer(first: int) -> None:
        for i in range(first, first + 20):
            await batcher.submit(i)
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(100 * w) for w in range(16)))
    assert most == 1
    assert sum(flushed) == 320 and len(flushed) <= 320 / 8  # at least 8 writes a request


@pytest.mark.parametrize("in_flight", [1, 2, 4])
async def test_batcher_one_submit_after_another_never_strands_an_item(in_flight: int) -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush, max_batch=8, key=lambda i: i,
                                         max_in_flight=in_flight)
    for i in range(50):  # each submit lands just as the previous drainer finishes
        assert await asyncio.wait_for(batcher.submit(i), 1) == i
