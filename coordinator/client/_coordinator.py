"""A typed Python client for the Coordinator service, so nobody hand-writes protobuf.

Every method maps to one RPC of ``txc.v1.Coordinator``; errors are gRPC's own
(``grpc.aio.AioRpcError`` with the status code and the server's message).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from .._proto.txc.v1 import coordinator_pb2 as pb
from .._proto.txc.v1 import coordinator_pb2_grpc as pb_grpc
from ..rpc._tls import TlsFiles
from ..telemetry._tracing import current_carrier
from ._failover import Failover, coordinator_channel, split_addresses
from ._start_stream import StartStreams

Payload = bytes | str | Mapping[str, Any] | None

TERMINAL_STATES = frozenset({pb.TX_STATE_COMMITTED, pb.TX_STATE_COMPENSATED, pb.TX_STATE_ABORTED})
"""Finished: every branch is done or undone."""
SETTLED_STATES = TERMINAL_STATES | {pb.TX_STATE_FAILED}
"""Terminal, or FAILED (waiting for an operator)."""

_PASSING = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND})
_WAIT_PAUSE_S, _WAIT_MAX_PAUSE_S = 0.1, 1.0  # between looks while a wait rides over them


class WaitTimedOut(grpc.aio.AioRpcError, TimeoutError):
    """``wait_settled`` ran out of time: DEADLINE_EXCEEDED, whose message says what the
    wait last saw (never started, or the state it was in). Also a ``TimeoutError``, as
    waits have always raised. ``transaction``: the last state seen; None if never found."""

    def __init__(self, gid: str, timeout_s: float, seen: pb.Transaction | None) -> None:
        if seen is None:
            details = (f"transaction {gid!r} was not started within {timeout_s:g} s "
                       "(not found until then)")
        else:
            state = pb.TxState.Name(seen.state).removeprefix("TX_STATE_")
            details = f"transaction {gid!r} did not settle within {timeout_s:g} s: {state}"
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(),
                         grpc.aio.Metadata(), details=details, debug_error_string=None)
        self.transaction = seen


def settled(tx: pb.Transaction) -> bool:
    """Terminal or FAILED: nothing more happens to ``tx`` without an operator."""
    return tx.state in SETTLED_STATES


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def encode_payload(payload: Payload) -> bytes:
    """Bytes as they are, text as UTF-8, a mapping as compact JSON with sorted keys."""
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class Retry:
    """Retries of calls whose outcome is unknown (see ``RetryPolicy`` in coordinator.proto)."""

    max_attempts: int = 0
    """Attempts per operation; 0 = until the deadline of the transaction or phase."""
    initial_backoff_s: float = 0.1
    """First pause between attempts, in seconds."""
    max_backoff_s: float = 10.0
    """Longest pause between attempts, in seconds."""
    multiplier: float = 2.0
    """Growth of the pause per attempt (>= 1)."""

    def to_proto(self) -> pb.RetryPolicy:
        return pb.RetryPolicy(max_attempts=self.max_attempts,
                              initial_backoff=_duration(self.initial_backoff_s),
                              max_backoff=_duration(self.max_backoff_s),
                              multiplier=self.multiplier)


@dataclass(frozen=True, slots=True)
class Step:
    """One branch: an action on a participant and, in a saga, the compensation that undoes it."""

    name: str
    """Unique within the transaction: 1-128 characters of [A-Za-z0-9._:@-]."""
    participant: str
    """``host:port`` of a ``txc.v1.Participant`` service."""
    action: str
    """Operation the participant dispatches on, e.g. ``accounts.debit``."""
    compensation: str = ""
    """Saga only: the operation that undoes ``action`` ("" = nothing to undo)."""
    payload: Payload = None
    """Sent with every call of this branch (a mapping is sent as JSON)."""
    after: Sequence[str] = ()
    """Concurrent sagas only: branches that must succeed first."""
    timeout_s: float | None = None
    """Deadline of one attempt; None = the server's default (5 s)."""
    retry: Retry | None = None
    """Retries of the action (2PC: Prepare); None = the server's default policy."""
    compensation_retry: Retry | None = None
    """Retries of the compensation (2PC: Commit and Abort); None = until acknowledged,
    within the coordinator's phase budget (one hour), whatever ``retry.max_attempts``."""

    def to_proto(self) -> pb.Branch:
        return pb.Branch(name=self.name, participant=self.participant, action=self.action,
                         compensation=self.compensation, payload=encode_payload(self.payload),
                         after=list(self.after), timeout=_duration(self.timeout_s),
                         retry=self.retry.to_proto() if self.retry else None,
                         compensation_retry=(self.compensation_retry.to_proto()
                                             if self.compensation_retry else None))


@dataclass(frozen=True, slots=True)
class Notify:
    """Who to tell when the transaction settles (terminal or FAILED): ``operation`` at
    ``participant`` is called as an Execute with the settled ``txc.v1.Transaction`` as its
    payload and the idempotency key ``{gid}/notify`` (a Python receiver: ``@host.notice``)."""

    participant: str
    """``host:port`` of a ``txc.v1.Participant`` service (allow-listed as branches are)."""
    operation: str
    """Operation the receiver dispatches on, e.g. ``orders.settled``."""
    retry: Retry | None = None
    """Retries of an unanswered notice; None = the server's default policy."""
    budget_s: float | None = None
    """How long it is retried after the settlement; None = the server's default (1 h)."""
    timeout_s: float | None = None
    """Deadline of one attempt; None = the server's default (5 s)."""

    def to_proto(self) -> pb.Notify:
        return pb.Notify(participant=self.participant, operation=self.operation,
                         retry=self.retry.to_proto() if self.retry else None,
                         budget=_duration(self.budget_s), timeout=_duration(self.timeout_s))


@dataclass(frozen=True, slots=True)
class Saga:
    """A saga plan: ``Saga(gid="t-1", steps=[Step(...), ...])``."""

    steps: Sequence[Step]
    gid: str = ""
    """Idempotency of the start; "" = the server generates one."""
    concurrent: bool = False
    """False: steps run in list order; True: as a DAG over ``Step.after``."""
    timeout_s: float | None = None
    """Forward deadline; None = the server's default (60 s)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    notify: Notify | None = None
    """Told of each settlement; None = nobody."""

    def to_proto(self, wait: bool = False) -> pb.StartSagaRequest:
        return pb.StartSagaRequest(gid=self.gid, branches=[s.to_proto() for s in self.steps],
                                   concurrent=self.concurrent, timeout=_duration(self.timeout_s),
                                   wait=wait, labels=dict(self.labels),
                                   notify=self.notify.to_proto() if self.notify else None)


@dataclass(frozen=True, slots=True)
class TwoPhase:
    """A two-phase commit: every step is prepared, then all commit or all abort."""

    steps: Sequence[Step]
    """Steps without ``compensation`` or ``after``."""
    gid: str = ""
    timeout_s: float | None = None
    """Prepare deadline; None = the server's default (30 s)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    notify: Notify | None = None
    """Told of each settlement; None = nobody."""

    def to_proto(self, wait: bool = False) -> pb.StartTwoPhaseRequest:
        return pb.StartTwoPhaseRequest(gid=self.gid, branches=[s.to_proto() for s in self.steps],
                                       timeout=_duration(self.timeout_s), wait=wait,
                                       labels=dict(self.labels),
                                       notify=self.notify.to_proto() if self.notify else None)


@dataclass(frozen=True, slots=True)
class ListFilter:
    """Which transactions ``list`` and ``list_all`` return; empty fields match everything."""

    states: Iterable[pb.TxState.ValueType] = ()
    protocol: pb.Protocol.ValueType = pb.PROTOCOL_UNSPECIFIED
    labels: Mapping[str, str] = field(default_factory=dict)
    gid_prefix: str = ""
    participant: str = ""  # HOST:PORT: only transactions with a branch there

    def to_proto(self, page_size: int, page_token: str) -> pb.ListTransactionsRequest:
        return pb.ListTransactionsRequest(
            states=list(self.states), protocol=self.protocol, page_size=page_size,
            page_token=page_token, labels=dict(self.labels), gid_prefix=self.gid_prefix,
            participant=self.participant)


def default_actor() -> str:
    """``user@host``: what operator actions record as the claimed actor by default."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


class CoordinatorClient:
    """``async with CoordinatorClient("127.0.0.1:7070") as c: await c.start_saga(saga)``.

    ``addresses``: one coordinator or several (a list, or ``"a:7070,b:7070"``), or a DNS
    name that resolves to several. Calls are spread over all of them; a start or read
    that meets a coordinator which is gone, paused or cut from etcd is sent again to
    another one within the call's deadline (``failover`` tunes how; see
    ``coordinator.client._failover``). ``timeout_s`` bounds every call (``wait=True``
    starts may pass their own); ``tls_ca`` (PEM) talks TLS to coordinators serving it;
    ``tls_identity`` is the client certificate to present to one that requires it
    (``txc serve --tls-client-ca``); ``token`` is sent as ``authorization: Bearer`` on
    operator actions and reads (``txc serve --operator-tokens``); ``actor`` is recorded
    in the history beside the operator's name. ``stream_starts``: starts go over the
    coordinator's ``Starts`` stream when it has one (cheaper for both sides under load;
    unary otherwise, remembered).
    """

    def __init__(self, addresses: str | Sequence[str], *, timeout_s: float = 10.0,
                 tls_ca: bytes | None = None, tls_identity: TlsFiles | None = None,
                 token: str | None = None, actor: str | None = None,
                 failover: Failover | None = None, stream_starts: bool = True) -> None:
        self.addresses = tuple(split_addresses(addresses))
        self.address = ",".join(self.addresses)
        failover = failover or Failover()
        self._channel = coordinator_channel(self.addresses, tls_ca, tls_identity, failover)
        # The token rides on reads too: a coordinator may protect them (--protect-reads).
        self._read_metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stub = pb_grpc.CoordinatorStub(self._channel)
        self._starts = (StartStreams(self._stub, len(self.addresses), failover) if stream_starts
                        else None)
        self._timeout_s = timeout_s
        operator = [("x-txc-actor", actor or default_actor())]
        if token:
            operator.append(("authorization", f"Bearer {token}"))
        self._operator_metadata = tuple(operator)

    async def __aenter__(self) -> CoordinatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._starts is not None:
            await self._starts.close()
        await self._channel.close(None)

    # -- starts ---------------------------------------------------------------------------
    async def start_saga(self, saga: Saga | pb.StartSagaRequest, *, wait: bool = False,
                         timeout_s: float | None = None) -> pb.StartResponse:
        """Start (idempotent on gid). ``wait=True`` returns once the saga has settled, or
        shortly before ``timeout_s`` with the saga as it stands. A request message is sent
        as it is (its own ``wait`` applies)."""
        request = saga.to_proto(wait) if isinstance(saga, Saga) else saga
        return await self._start(request, timeout_s or self._timeout_s)

    async def start_two_phase(self, tx: TwoPhase | pb.StartTwoPhaseRequest, *, wait: bool = False,
                              timeout_s: float | None = None) -> pb.StartResponse:
        """Start a 2PC transaction (idempotent on gid); ``wait`` as in ``start_saga``."""
        request = tx.to_proto(wait) if isinstance(tx, TwoPhase) else tx
        return await self._start(request, timeout_s or self._timeout_s)

    async def _start(self, request: pb.StartSagaRequest | pb.StartTwoPhaseRequest,
                     timeout_s: float) -> pb.StartResponse:
        """Over the Starts stream where the coordinator has it, else unary. A start waits
        for a coordinator that serves (wait_for_ready): while every one says NOT_SERVING,
        as during an etcd leader election, it waits instead of failing at once."""
        if self._starts is not None and not self._starts.unsupported:
            streamed = await self._starts.start(request, timeout_s, current_carrier())
            if streamed is not None:
                return streamed
        method = (self._stub.StartSaga if isinstance(request, pb.StartSagaRequest)
                  else self._stub.StartTwoPhase)
        response: pb.StartResponse = await method(request, timeout=timeout_s,  # type: ignore[arg-type]
                                                  metadata=_traced(()), wait_for_ready=True)
        return response

    # -- reads ----------------------------------------------------------------------------
    async def get(self, gid: str, *, include_payloads: bool = False) -> pb.Transaction:
        """``include_payloads``: with each branch's ``payload`` (PERMISSION_DENIED without the
        read right on a coordinator with operators)."""
        tx: pb.Transaction = await self._stub.GetTransaction(
            pb.GetTransactionRequest(gid=gid, include_payloads=include_payloads),
            timeout=self._timeout_s,
            metadata=self._read_metadata)
        return tx

    async def list(self, where: ListFilter | None = None, *, page_size: int = 50,
                   page_token: str = "") -> pb.ListTransactionsResponse:
        """One page, in gid order; ``next_page_token`` is "" on the last."""
        request = (where or ListFilter()).to_proto(page_size, page_token)
        response: pb.ListTransactionsResponse = await self._stub.ListTransactions(
            request, timeout=self._timeout_s, metadata=self._read_metadata)
        return response

    async def list_all(self, where: ListFilter | None = None, *,
                       page_size: int = 500) -> AsyncIterator[pb.Transaction]:
        """Every matching transaction, page after page."""
        token = ""
        while True:
            page = await self.list(where, page_size=page_size, page_token=token)
            for tx in page.transactions:
                yield tx
            token = page.next_page_token
            if not token:
                return

    async def watch(self, gid: str) -> AsyncIterator[pb.Transaction]:
        """The transaction now, then after every change, until it settles."""
        async for tx in self._stub.WatchTransaction(pb.GetTransactionRequest(gid=gid),
                                                    metadata=self._read_metadata):

            yield tx

    async def wait_settled(self, gid: str, timeout_s: float = 60.0) -> pb.Transaction:
        """The transaction once settled. Rides over what may pass within ``timeout_s``: a
        coordinator restarting or failing over (UNAVAILABLE) and a gid not started yet
        (NOT_FOUND: an outbox relay or another process is about to start it). At the
        deadline raises ``WaitTimedOut``: DEADLINE_EXCEEDED, and a ``TimeoutError``."""
        seen: pb.Transaction | None = None
        pause = _WAIT_PAUSE_S
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                while True:
                    try:
                        async for tx in self.watch(gid):
                            seen, pause = tx, _WAIT_PAUSE_S
                            if settled(tx):
                                return tx
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() not in _PASSING:
                            raise
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _WAIT_MAX_PAUSE_S)
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise WaitTimedOut(gid, timeout_s, seen) from exc

    # -- operator actions ---------------------------------------------------------------
    # Never retried (not in Failover's idempotent methods): one applied before its reply
    # was lost must not be applied again behind the operator's back.
    async def _operate(self, method: Any, request: Any) -> Any:
        return await method(request, timeout=self._timeout_s,
                            metadata=_traced(self._operator_metadata))

    async def replay(self, gid: str, reason: str) -> pb.Transaction:
        """Re-drive a FAILED or stuck transaction with fresh retry budgets."""
        tx: pb.Transaction = await self._operate(self._stub.ReplayTransaction,
                                                 pb.ReplayRequest(gid=gid, reason=reason))
        return tx

    async def skip(self, gid: str, branch: str, reason: str) -> pb.Transaction:
        """Mark one branch done by hand (fixed outside txcoord)."""
        tx: pb.Transaction = await self._operate(
            self._stub.SkipBranch, pb.SkipBranchRequest(gid=gid, branch=branch, reason=reason))
        return tx

    async def abort(self, gid: str, reason: str) -> pb.Transaction:
        """Saga: compensate. 2PC: abort unless commit was decided."""
        tx: pb.Transaction = await self._operate(self._stub.AbortTransaction,
                                                 pb.AbortRequest(gid=gid, reason=reason))
        return tx

    async def pause(self, gid: str, reason: str) -> pb.Transaction:
        """Stop driving it after the calls in flight; its deadline stands still."""
        tx: pb.Transaction = await self._operate(self._stub.PauseTransaction,
                                                 pb.PauseRequest(gid=gid, reason=reason))
        return tx

    async def resume(self, gid: str, reason: str) -> pb.Transaction:
        """Drive a paused transaction again (its deadline moves by the time paused)."""
        tx: pb.Transaction = await self._operate(self._stub.ResumeTransaction,
                                                 pb.ResumeRequest(gid=gid, reason=reason))
        return tx

    async def hold(self, address: str, reason: str, *, refuse_starts: bool = False) -> pb.Hold:
        """Hold a participant address, cluster-wide, until ``release``."""
        hold: pb.Hold = await self._operate(
            self._stub.HoldParticipant,
            pb.HoldRequest(address=address, reason=reason, refuse_starts=refuse_starts))
        return hold

    async def release(self, address: str, reason: str) -> pb.Hold:
        """Release a hold; its waiting transactions resume at a bounded rate."""
        hold: pb.Hold = await self._operate(self._stub.ReleaseParticipant,
                                            pb.ReleaseRequest(address=address, reason=reason))
        return hold

    async def holds(self) -> Sequence[pb.Hold]:
        """The participants held now (cluster-wide), each with the transactions waiting
        on it at the coordinator that answered."""
        reply: pb.ListHoldsResponse = await self._stub.ListHolds(
            pb.ListHoldsRequest(), timeout=self._timeout_s, metadata=self._read_metadata)
        return tuple(reply.holds)


def _traced(metadata: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``metadata`` with the caller's trace context (OpenTelemetry), so that the
    coordinator's spans join the caller's trace."""
    carrier = current_carrier()
    return (*metadata, *carrier.items()) if carrier else metadata
