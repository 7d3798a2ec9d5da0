"""Structure-aware fuzzing of every Coordinator method against a real ``txc serve`` process.

Hypothesis builds requests field by field (valid values, edge values and junk: NaN, huge
durations, non-ASCII digits, newlines, unknown enum numbers, duplicate names, cycles) and
also sends mutated bytes of valid requests. The coordinator must answer every one with a
definite status (never UNKNOWN or INTERNAL), stay healthy, stay under a memory bound, and
keep nothing validation should have refused.

CI runs TXC_FUZZ_EXAMPLES examples per method (default 150, ~20 s in all); a longer run:
``TXC_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/integration/test_fuzz.py``.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import CoordinatorClient, pb
from coordinator.domain.validation import Limits
from coordinator.server import DevEtcd

from .conftest import CoordinatorProcess
from .participant import ScriptedParticipant

pytestmark = pytest.mark.integration

NAME = re.compile(r"[A-Za-z0-9._:@-]{1,128}", re.ASCII)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
EXAMPLES = int(os.environ.get("TXC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
DEFINITE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAUTHENTICATED}
RSS_LIMIT_MB = 400

names = st.one_of(st.from_regex(r"[A-Za-z0-9._:@-]{1,12}", fullmatch=True),
                  st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True).map(lambda n: n + "\n"),

                  st.sampled_from(["", "a\n", "x" * 129, "a/b", "é", "g\x00"]), st.text(max_size=20))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -1.0, 1.0, 1e300, math.nan, math.inf]))


@st.composite
def durations(draw: st.DrawFn) -> Duration:
    return Duration(seconds=draw(st.integers(-10, 10**9)), nanos=draw(st.integers(-10**9, 10**9)))


def branches(participant: str) -> st.SearchStrategy[pb.Branch]:
    """Any branch: each field valid, at an edge, or junk."""
    return st.builds(
        pb.Branch, name=names,
        participant=st.one_of(st.just(participant), st.sampled_from(JUNK_ADDRESSES), st.text(max_size=30)),
        action=st.one_of(st.just("a.do"), st.text(max_size=300)),
        compensation=st.one_of(st.just(""), st.just("a.undo"), st.text(max_size=20)),
        payload=st.one_of(st.just(b"{}"), st.binary(max_size=64)),
        after=st.lists(names, max_size=4),
        timeout=st.one_of(st.none(), durations()),
        retry=st.one_of(st.none(), retries()))


JUNK_ADDRESSES = ["", "127.0.0.1:\u0664\u0669\u0663\u0663\u0665", "127.0.0.1:1\n", "host",
                  "[::1]:70000", "h:0"]


def retries() -> st.SearchStrategy[pb.RetryPolicy]:
    return st.builds(pb.RetryPolicy, max_attempts=st.integers(0, 2**32 - 1),
                     initial_backoff=durations(), max_backoff=durations(), multiplier=numbers)


labels = st.dictionaries(st.text(max_size=300), st.text(max_size=300), max_size=40)


@st.composite
def nearly_valid(draw: st.DrawFn, participant: str, two_phase: bool) -> Message:
    """A valid start, or one with a field replaced by anything: many reach the engine, and
    each bad one must be caught by the one rule it breaks."""
    count = draw(st.integers(1, 4))
    plan = [pb.Branch(name=f"b{i}", participant=participant, action="a.do", payload=b"{}",
                      compensation="" if two_phase else "a.undo") for i in range(count)]
    gid = draw(st.one_of(st.from_regex(r"[A-Za-z0-9._:@-]{1,24}", fullmatch=True), names))
    request: Message = (pb.StartTwoPhaseRequest(gid=gid, branches=plan) if two_phase
                        else pb.StartSagaRequest(gid=gid, branches=plan))
    for _ in range(draw(st.integers(0, 1))):

        field = draw(st.sampled_from(["labels", "timeout", "branch"]))
        if field == "labels":

            request.labels.update(draw(labels))  # type: ignore[attr-defined]
        elif field == "timeout":
            request.timeout.CopyFrom(draw(durations()))  # type: ignore[attr-defined]
        else:
            at = draw(st.integers(0, count - 1))
            request.branches[at].CopyFrom(draw(branches(participant)))  # type: ignore[attr-defined]
    return request


def starts(participant: str) -> st.SearchStrategy[Message]:
    any_saga = st.builds(pb.StartSagaRequest, gid=names, branches=st.lists(branches(participant),
                         max_size=6), concurrent=st.booleans(),
                         timeout=st.one_of(st.none(), durations()), labels=labels)
    return st.one_of(nearly_valid(participant, False), nearly_valid(participant, True), any_saga)


lists = st.builds(pb.ListTransactionsRequest, states=st.lists(st.integers(-5, 20), max_size=4),
                  protocol=st.integers(-3, 5), page_size=st.integers(0, 2**32 - 1),
                  page_token=names, labels=labels, gid_prefix=names)
operator_requests = st.one_of(
    st.builds(pb.ReplayRequest, gid=names, reason=st.text(max_size=2000)),
    st.builds(pb.SkipBranchRequest, gid=names, branch=names, reason=st.text(max_size=2000)),
    st.builds(pb.AbortRequest, gid=names, reason=st.text(max_size=2000)))
OPERATOR_METHOD = {pb.ReplayRequest: "ReplayTransaction", pb.SkipBranchRequest: "SkipBranch",
                   pb.AbortRequest: "AbortTransaction"}


@pytest.fixture(scope="module")
def coordinator(etcd: DevEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    process = CoordinatorProcess(etcd, "/fuzz", Path(tmp_path_factory.mktemp("fuzz")))
    with grpc.insecure_channel(f"127.0.0.1:{process.port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def channel(coordinator: CoordinatorProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{coordinator.port}") as ch:
        yield ch


def call(channel: grpc.Channel, method: str, request: bytes, streaming: bool = False) -> None:
    """Send ``request`` as bytes; any definite answer is fine, UNKNOWN / INTERNAL are not."""
    path = f"/txc.v1.Coordinator/{method}"
    try:
        if streaming:
            for _ in channel.unary_stream(path)(request, timeout=2):
                break
        else:
            channel.unary_unary(path)(request, timeout=5)
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        assert code in DEFINITE, f"{method}: {code} {exc.details()}"  # type: ignore[attr-defined]
        assert "Traceback" not in (exc.details() or "")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def participant_address() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    p = loop.run_until_complete(ScriptedParticipant().start())
    import threading
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield p.address
    asyncio.run_coroutine_threadsafe(p.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_starts(channel: grpc.Channel, participant_address: str) -> None:
    @FUZZ
    @given(starts(participant_address))
    def start(request: Message) -> None:
        method = "StartSaga" if isinstance(request, pb.StartSagaRequest) else "StartTwoPhase"
        call(channel, method, request.SerializeToString())
    start()


def test_reads_and_operator_actions(channel: grpc.Channel) -> None:
    @FUZZ
    @given(lists, names, operator_requests)
    def read_and_act(listing: pb.ListTransactionsRequest, gid: str, action: object) -> None:
        call(channel, "ListTransactions", listing.SerializeToString())
        get = pb.GetTransactionRequest(gid=gid).SerializeToString()
        call(channel, "GetTransaction", get)
        call(channel, "WatchTransaction", get, streaming=True)
        call(channel, OPERATOR_METHOD[type(action)], action.SerializeToString())  # type: ignore[attr-defined]
    read_and_act()


def test_mutated_bytes(channel: grpc.Channel, participant_address: str) -> None:
    valid = pb.StartSagaRequest(gid="mutant", branches=[pb.Branch(
        name="a", participant=participant_address, action="a.do", payload=b"{}")]).SerializeToString()

    @FUZZ
    @given(st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1,
                    max_size=6), st.sampled_from(sorted({"StartSaga", "StartTwoPhase",
                                                          "ListTransactions", "GetTransaction",
                                                          "ReplayTransaction", "SkipBranch"})))
    def mutate(flips: list[tuple[int, int]], method: str) -> None:
        data = bytearray(valid)
        for at, value in flips:
            data[at] = value
        call(channel, method, bytes(data))
    mutate()


def test_afterwards_healthy_bounded_and_nothing_invalid_kept(
        channel: grpc.Channel, coordinator: CoordinatorProcess) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    rss_kb = int(next(line.split()[1] for line in Path(f"/proc/{coordinator.proc.pid}/status")
                      .read_text().splitlines() if line.startswith("VmRSS:")))
    assert rss_kb / 1024 < RSS_LIMIT_MB

    async def kept() -> list[pb.Transaction]:
        async with CoordinatorClient(f"127.0.0.1:{coordinator.port}") as client:
            return [tx async for tx in client.list_all()]

    limits = Limits()
    kept_now = asyncio.run(kept())
    assert kept_now  # some generated plans were valid: the fuzzing reached the engine
    for tx in kept_now:  # judged by the rules as the proto states them, not by the code
        assert NAME.fullmatch(tx.gid) and all(NAME.fullmatch(b.name) for b in tx.branches), tx
        assert len(tx.labels) <= limits.max_labels and 0 < len(tx.branches) <= limits.max_branches
        for key, value in tx.labels.items():
            assert 0 < len(key.encode()) <= 256 and len(value.encode()) <= 256
            assert not CONTROL.search(key + value)
