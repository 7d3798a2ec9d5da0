"""TxLog on etcd v3 (client: etcd3aio, grpc.aio based).

Keys under ``prefix``:
  tx/{gid}     the record's state (JSON, no payloads), rewritten by every transition.
               Finished records carry a retention lease, so etcd itself deletes them once
               the retention period is over.
  payload/{gid} the branches' payloads, written once with the record and deleted when it
               finishes (nothing calls a participant after that; the state keeps a digest).
               Absent when every payload is empty.
  active/{gid} present while the transaction is unfinished (not settled, or settled with its
               notice still to deliver): the orphan scan reads it.
  owner/{gid}  the owning coordinator's id, bound to that coordinator's lease: when the
               coordinator dies, etcd deletes it and the transaction becomes an orphan.
  failed/{gid} present while the transaction is FAILED (waiting for an operator): counting
               them is one cheap request, where counting FAILED records would read them all.
  hold/{addr}  a participant address held by an operator (domain.holds), until released.
  member/{id}  one per live coordinator, bound to its lease: its deletion (the lease expired
               or was revoked) tells the others to look for orphans at once.


Every write is a Txn that compares the record's mod_revision and the owner key's value.
Concurrent writes of different transactions are grouped into one Txn of nested Txns
(etcd >= 3.3), each nested Txn with its own compare, so one request carries many
transactions' transitions and each still succeeds or fails on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import etcd3aio
import grpc
from etcd3aio.proto.etcd.api.etcdserverpb.rpc_pb2 import Compare, RequestOp, TxnRequest

from ..domain.holds import Hold
from ..domain.records import TxRecord, TxState
from ..telemetry._metrics import OFF, Metrics
from ._batch import Batcher
from ._codec import (
    decode,
    decode_hold,
    encode,
    encode_hold,
    encode_payloads,
    has_payloads,
    with_payloads,
)
from ._interface import Created, LogError, LostOwnership, RequestTooLarge, Stored

log = logging.getLogger("txcoord.log")
KV = etcd3aio.kv.KVService


@dataclass(frozen=True, slots=True)
class EtcdOptions:
    """Where the transaction log lives in etcd and how the coordinator talks to it."""

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    """etcd members, HOST:PORT each; the client moves between them."""

    prefix: str = "/txc/v1"
    """Key prefix of every key txcoord writes (several clusters may share one etcd)."""

    lease_ttl_s: int = 3
    """A dead coordinator's transactions are taken over about this long after its last
    keep-alive (keep-alives go every TTL/6, so a pause under ~5/6 TTL is no takeover)."""

    retention_s: int = 7 * 24 * 3600
    """How long a finished transaction stays readable (its record's lease)."""

    request_timeout_s: float = 5.0
    """One etcd request other than a transition (reads, leases)."""

    txn_timeout_s: float = 2.0
    """A transition's request (create, write, claim) that has no answer by then is given up
    and sent again (the CAS makes that safe): one stuck on a member that just died must not
    hold its transactions for the whole request timeout."""

    max_batch: int = 64
    """Most transitions one group-commit request carries."""

    max_request_bytes: int = 1536 * 1024
    """etcd's --max-request-bytes (its default): one request, a batch included, stays under
    it; a transaction that could outgrow it is refused at its start."""

    max_receive_bytes: int = 64 * 1024 * 1024
    """Largest reply the client accepts (a page of listed records); gRPC's default is 4 MiB."""

    max_in_flight: int = 4
    """Group-commit requests in flight at once: one while requests are quick (so that
    writes accumulate under load), more once one has been in flight 20 ms, so that a
    request stuck on a slow or unreachable member holds up no other write."""

    def __post_init__(self) -> None:
        if not self.endpoints or not all(self.endpoints):
            raise ValueError("endpoints: at least one HOST:PORT, none empty")
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"prefix: must start with '/' and not end with one, not {self.prefix!r}")
        for name in ("lease_ttl_s", "retention_s", "request_timeout_s", "txn_timeout_s",
                     "max_batch", "max_request_bytes", "max_receive_bytes", "max_in_flight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, not {getattr(self, name)}")


_REQUEST_OVERHEAD = 64 * 1024  # keys, compares and framing around a request's values


@dataclass(frozen=True, slots=True)
class _Create:
    record: TxRecord
    state: bytes
    payloads: bytes


@dataclass(frozen=True, slots=True)
class _Write:
    record: TxRecord  # the new record, its seq already counted
    prev_revision: int
    state: bytes
    was_failed: bool  # the previous record was FAILED (its failed/ key exists)


_Written = Stored | LostOwnership | RequestTooLarge  # a write's own outcome in a batch
_Committed = Created | _Written  # a create's or a write's own outcome in a batch


def _item_bytes(item: _Create | _Write) -> int:
    return len(item.state) + len(item.payloads) if isinstance(item, _Create) else len(item.state)


def _write(prev: Stored, new: TxRecord) -> _Write:
    mine = replace(new, seq=prev.record.seq + 1)
    return _Write(mine, prev.revision, encode(mine), prev.record.state is TxState.FAILED)


class EtcdLog:
    def __init__(self, options: EtcdOptions, owner_id: str, metrics: Metrics = OFF) -> None:
        self._opts = options
        self._metrics = metrics
        self._owner_id = owner_id
        self._client = etcd3aio.Etcd3Client(list(options.endpoints), rpc_max_attempts=3)
        # etcd3aio takes no channel options; its connection manager holds the list it opens
        # the channel with. Without this, listing large records fails past gRPC's 4 MiB.
        self._client._manager.grpc_options[:] = _etcd_channel_options(
            self._client._manager.grpc_options, options.max_receive_bytes)

        self._p = options.prefix.rstrip("/")
        self._lease_id = 0
        self.lease_epoch = 0  # counts the leases taken: what a run was driven under
        self._lease_expires = 0.0
        self._last_answer = 0.0  # monotonic time etcd last answered this process
        self._keepalive: asyncio.Task[None] | None = None
        self._retention = _RetentionLeases(self, options.retention_s)
        budget = options.max_request_bytes - _REQUEST_OVERHEAD
        # Creates and writes share one group commit: one request carries both, so a loaded
        # coordinator sends one request where it sent one per kind.
        self._commits: Batcher[_Create | _Write, _Committed] = Batcher(
            self._commit_batch, options.max_batch, key=lambda item: item.record.gid,
            max_in_flight=options.max_in_flight, size=_item_bytes, max_bytes=budget)
        self.requests = 0  # etcd requests made (bench: writes per transaction)

    @property
    def owner_id(self) -> str:
        return self._owner_id

    # -- keys ------------------------------------------------------------------------
    def _tx(self, gid: str) -> bytes:
        return f"{self._p}/tx/{gid}".encode()

    def _payload(self, gid: str) -> bytes:
        return f"{self._p}/payload/{gid}".encode()

    def _active(self, gid: str) -> bytes:
        return f"{self._p}/active/{gid}".encode()

    def _owner(self, gid: str) -> bytes:
        return f"{self._p}/owner/{gid}".encode()

    def _failed(self, gid: str) -> bytes:
        return f"{self._p}/failed/{gid}".encode()

    # -- lease -----------------------------------------------------------------------
    async def open(self) -> None:
        await self._client.connect()
        grant = await self._call(self._kv_lease().grant(self._opts.lease_ttl_s), "lease")
        self._lease_id = grant.ID
        self.lease_epoch += 1
        self._lease_expires = time.monotonic() + grant.TTL
        await self._announce()
        self._keepalive = asyncio.create_task(self._keep_alive(), name="txc-lease-keepalive")

    def _member(self, owner_id: str = "") -> bytes:
        return f"{self._p}/member/{owner_id}".encode()

    async def _announce(self) -> None:
        """``member/{id}``, bound to the lease: its deletion tells the others at once that
        this coordinator's lease is gone (departures)."""
        await self._call(self._kv().put(self._member(self._owner_id), b"", lease=self._lease_id,
                                        timeout=self._opts.request_timeout_s), "member")

    async def departures(self) -> AsyncIterator[str]:
        """Ids of coordinators whose lease ended (expired or revoked), as it happens."""
        watch = self._client.watch
        if watch is None:
            raise LogError("etcd client is not connected")
        prefix = self._member()
        async for response in watch.watch(prefix, etcd3aio.prefix_range_end(prefix)):
            for event in response.events:
                if event.type == event.DELETE:
                    yield event.kv.key[len(prefix):].decode()

    async def close(self, *, release: bool = True) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        if release and self._lease_id:
            with contextlib.suppress(Exception):
                await self._kv_lease().revoke(self._lease_id, timeout=2.0)
        await self._client.close()

    def lease_alive(self) -> bool:
        return time.monotonic() < self._lease_expires

    def reachable(self) -> bool:
        """The lease holds and etcd answered within the last few keep-alives: false soon
        after this process is cut from etcd, long before the lease runs out."""
        quiet = time.monotonic() - self._last_answer
        return self.lease_alive() and quiet < max(1.0, 3 * self._keepalive_interval)

    @property
    def _keepalive_interval(self) -> float:
        return max(0.2, self._opts.lease_ttl_s / 6)

    async def _keep_alive(self) -> None:
        # Often, so that a lease has most of its TTL left whenever this process stops: a
        # pause shorter than ~5/6 of the TTL is no takeover.
        interval = self._keepalive_interval
        while True:
            await asyncio.sleep(interval)
            sent = time.monotonic()
            try:
                ttl = await self._renew()
            except Exception as exc:
                log.warning("lease keep-alive failed: %s", type(exc).__name__)
                continue
            if ttl > 0:
                self._lease_expires = sent + ttl
                self._last_answer = time.monotonic()
                continue
            log.error("lease %x expired; its transactions are orphans now and will be claimed "
                      "again", self._lease_id)
            self._lease_expires = 0.0
            await self._regrant()

    async def _renew(self) -> int:
        stream = self._kv_lease().keep_alive(self._lease_id)
        try:
            reply = await asyncio.wait_for(stream.read(), self._opts.request_timeout_s)
        finally:
            stream.cancel()
        return int(getattr(reply, "TTL", 0))

    async def _regrant(self) -> None:
        """A coordinator whose lease ended keeps serving under a new one."""
        while True:
            try:
                grant = await self._call(self._kv_lease().grant(self._opts.lease_ttl_s), "lease")
            except LogError as exc:
                log.warning("lease grant failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            self._lease_id = grant.ID
            self.lease_epoch += 1
            self._lease_expires = time.monotonic() + grant.TTL
            try:
                await self._announce()
            except LogError as exc:  # the scan still finds our orphans; only speed is lost
                log.warning("member key not written: %s", exc)
            return

    def _kv_lease(self) -> Any:
        if self._client.lease is None:
            raise LogError("etcd client is not connected")
        return self._client.lease

    def _kv(self) -> Any:
        if self._client.kv is None:
            raise LogError("etcd client is not connected")
        return self._client.kv

    async def _call(self, awaitable: Any, kind: str) -> Any:
        """One etcd request; ``kind`` names it in the metrics (create, write, get, ...)."""
        self.requests += 1
        started = time.perf_counter()
        outcome = "error"
        try:
            reply = await awaitable
            outcome = "ok"
            self._last_answer = time.monotonic()
            return reply
        except (TimeoutError, etcd3aio.EtcdError) as exc:
            self._lease_gone_if(str(exc))
            raise LogError(f"etcd: {exc or type(exc).__name__}") from exc
        except Exception as exc:  # grpc errors not mapped by the client
            if type(exc).__module__.startswith("grpc"):
                details = str(exc.details()) if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                if "request is too large" in details or "larger than max" in details:
                    raise RequestTooLarge(f"etcd: {details}") from exc
                self._lease_gone_if(details)
                raise LogError(f"etcd: {details}") from exc
            raise
        finally:
            self._metrics.etcd_request(kind, outcome, time.perf_counter() - started)

    def _lease_gone_if(self, error: str) -> None:
        """etcd no longer knows our lease (it expired while this process could not renew
        it, e.g. paused): stop acting under it at once; the keep-alive loop gets a new one."""
        if "requested lease not found" in error and self._lease_expires:
            log.warning("lease %x is gone (etcd: requested lease not found)", self._lease_id)
            self._lease_expires = 0.0

    async def _txn(self, success: Sequence[RequestOp], kind: str) -> Any:
        return await self._call(self._kv().txn([], list(success), timeout=self._opts.txn_timeout_s,
                                               max_attempts=1), kind)

    # -- create ----------------------------------------------------------------------
    async def create(self, record: TxRecord) -> Created:
        first = replace(record, seq=1)
        result = await self._commits.submit(_Create(first, encode(first), encode_payloads(first)))
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, Created)
        return result

    def _created(self, create: _Create, nested: Any, revision: int) -> Created:
        if nested.succeeded:
            return Created(Stored(create.record, revision), created=True)
        existing = _full(nested.responses[0], nested.responses[1])
        assert existing is not None  # the compare failed: the record exists
        return Created(existing, created=False)

    def _create_op(self, create: _Create) -> TxnRequest:
        gid = create.record.gid
        success = [
            KV.txn_op_put(self._tx(gid), create.state),
            KV.txn_op_put(self._active(gid), b""),
            KV.txn_op_put(self._owner(gid), self._owner_id, lease=self._lease_id),
        ]
        if has_payloads(create.record):
            success.append(KV.txn_op_put(self._payload(gid), create.payloads))
        return TxnRequest(
            compare=[KV.txn_compare_create_revision(self._tx(gid), 0)],
            success=success,
            failure=self._read_ops(gid),
        )

    def _read_ops(self, gid: str) -> list[RequestOp]:
        """Ops that read a whole record: its state, then its payloads."""
        return [KV.txn_op_get(self._tx(gid)), KV.txn_op_get(self._payload(gid))]

    def value_bytes(self, record: TxRecord) -> tuple[int, int]:
        return len(encode(record)), len(encode_payloads(record))

    @property
    def max_request_bytes(self) -> int:
        return self._opts.max_request_bytes - _REQUEST_OVERHEAD

    # -- write -----------------------------------------------------------------------
    async def write(self, prev: Stored, new: TxRecord) -> Stored:
        result = await self._commits.submit(_write(prev, new))
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, Stored)
        return result

    async def _commit_batch(self, items: Sequence[_Create | _Write]) -> list[_Committed]:
        try:
            return await self._commit_together(items)
        except RequestTooLarge:
            if len(items) == 1:
                raise
        # The store's limit is below this log's (etcd --max-request-bytes): alone, only
        # the item that is too large fails.
        results: list[_Committed] = []
        for item in items:
            try:
                results.extend(await self._commit_together([item]))
            except RequestTooLarge as exc:
                results.append(exc)
        return results

    async def _commit_together(self, items: Sequence[_Create | _Write]) -> list[_Committed]:
        ops = []
        for item in items:
            if isinstance(item, _Create):
                ops.append(RequestOp(request_txn=self._create_op(item)))
                continue
            lease = await self._retention.lease_for(item.record) \
                if item.record.state.terminal and item.record.finished else 0
            ops.append(RequestOp(request_txn=self._write_op(item, lease)))
        # Named in the metrics by what it carries: "create" for creates alone, else "write".
        kind = "create" if all(isinstance(i, _Create) for i in items) else "write"
        reply = await self._txn(ops, kind)
        revision = reply.header.revision
        results: list[_Committed] = []
        for item, resp in zip(items, reply.responses, strict=True):
            nested = resp.response_txn
            if isinstance(item, _Create):
                results.append(self._created(item, nested, revision))
            elif nested.succeeded:
                results.append(Stored(item.record, revision))
            else:
                results.append(self._explain_conflict(item, nested))
        return results

    def _write_op(self, w: _Write, lease: int) -> TxnRequest:
        gid = w.record.gid
        success = [KV.txn_op_put(self._tx(gid), w.state, lease=lease)]
        if w.record.finished:  # settled, and no notice left to deliver: no owner needed
            success += [KV.txn_op_delete(self._active(gid)), KV.txn_op_delete(self._owner(gid))]
        if w.record.state.terminal:
            success.append(KV.txn_op_delete(self._payload(gid)))
        failed = w.record.state is TxState.FAILED
        if failed and not w.was_failed:
            success.append(KV.txn_op_put(self._failed(gid), b""))
        elif w.was_failed and not failed:
            success.append(KV.txn_op_delete(self._failed(gid)))
        return TxnRequest(
            compare=[
                Compare(result=Compare.EQUAL, target=Compare.MOD, key=self._tx(gid),
                        mod_revision=w.prev_revision),
                KV.txn_compare_value(self._owner(gid), self._owner_id),
            ],
            success=success,
            failure=[KV.txn_op_get(self._tx(gid)), KV.txn_op_get(self._owner(gid))],
        )

    def _explain_conflict(self, w: _Write, nested: Any) -> Stored | LostOwnership:
        """A failed compare may be our own earlier attempt that landed (ambiguous retry)."""
        rec_kvs = nested.responses[0].response_range.kvs
        if rec_kvs and rec_kvs[0].value == w.state:
            return Stored(w.record, rec_kvs[0].mod_revision)
        current = Stored(decode(rec_kvs[0].value), rec_kvs[0].mod_revision) if rec_kvs else None
        return LostOwnership(w.record.gid, current)

    # -- reads -----------------------------------------------------------------------
    async def get(self, gid: str) -> Stored | None:
        reply = await self._txn(self._read_ops(gid), "get")
        return _full(reply.responses[0], reply.responses[1])

    async def scan(self, *, start_after: str = "", limit: int = 100, prefix: str = "") -> list[Stored]:
        start = max(self._tx(start_after) + b"\x00" if start_after else b"", self._tx(prefix))
        end = etcd3aio.prefix_range_end(self._tx(prefix))

        reply = await self._call(self._kv().get(start, end, limit=limit,
                                                timeout=self._opts.request_timeout_s), "scan")
        return [Stored(decode(kv.value), kv.mod_revision) for kv in reply.kvs]  # no payloads

    async def claim(self, stored: Stored) -> Stored:
        gid = stored.record.gid
        op = TxnRequest(
            compare=[Compare(result=Compare.EQUAL, target=Compare.MOD, key=self._tx(gid),
                             mod_revision=stored.revision)],
            success=[KV.txn_op_put(self._owner(gid), self._owner_id, lease=self._lease_id),
                     KV.txn_op_put(self._active(gid), b"")],
            failure=[KV.txn_op_get(self._tx(gid))])
        nested = (await self._txn([RequestOp(request_txn=op)], "claim")).responses[0].response_txn
        if nested.succeeded:
            return stored
        kvs = nested.responses[0].response_range.kvs
        raise LostOwnership(gid, Stored(decode(kvs[0].value), kvs[0].mod_revision) if kvs else None)

    async def claim_orphans(self, limit: int = 100) -> list[Stored]:
        active = await self._gids_under("active")
        owned = set(await self._gids_under("owner"))
        orphans = [g for g in active if g not in owned][:limit]
        if not orphans:
            return []
        reply = await self._txn([RequestOp(request_txn=self._claim_op(g)) for g in orphans], "claim")
        claimed = []
        for resp in reply.responses:
            nested = resp.response_txn
            stored = _full(nested.responses[1], nested.responses[2]) if nested.succeeded else None
            if stored is not None:
                claimed.append(stored)
        return claimed

    def _claim_op(self, gid: str) -> TxnRequest:
        return TxnRequest(
            compare=[
                KV.txn_compare_create_revision(self._owner(gid), 0),
                KV.txn_compare_create_revision(self._active(gid), 0, result=Compare.GREATER),
            ],
            success=[
                KV.txn_op_put(self._owner(gid), self._owner_id, lease=self._lease_id),
                *self._read_ops(gid),
            ],
        )

    async def count_failed(self) -> int:
        prefix = self._failed("")
        reply = await self._call(self._kv().get(prefix, etcd3aio.prefix_range_end(prefix),
                                                count_only=True,
                                                timeout=self._opts.request_timeout_s), "count")
        return int(reply.count)

    async def mine(self) -> list[str]:
        me = self._owner_id.encode()
        return [gid for gid, owner in await self._under("owner", keys_only=False) if owner == me]

    async def _gids_under(self, kind: str) -> list[str]:
        return [gid for gid, _ in await self._under(kind, keys_only=True)]

    async def _under(self, kind: str, *, keys_only: bool) -> list[tuple[str, bytes]]:
        """(gid, value) of every key under ``{prefix}/{kind}/``; values empty if keys_only."""
        prefix = f"{self._p}/{kind}/".encode()
        reply = await self._call(self._kv().get(prefix, etcd3aio.prefix_range_end(prefix),
                                                keys_only=keys_only,
                                                timeout=self._opts.request_timeout_s), "keys")
        return [(kv.key[len(prefix):].decode(), kv.value) for kv in reply.kvs]

    # -- holds -------------------------------------------------------------------------
    def _hold(self, address: str) -> bytes:
        return f"{self._p}/hold/{address}".encode()

    async def holds(self) -> list[Hold]:
        return [decode_hold(value) for _, value in await self._under("hold", keys_only=False)]

    async def put_hold(self, hold: Hold) -> None:
        await self._txn([KV.txn_op_put(self._hold(hold.address), encode_hold(hold))], "hold")

    async def delete_hold(self, address: str) -> Hold | None:
        key = self._hold(address)
        reply = await self._txn([KV.txn_op_get(key), KV.txn_op_delete(key)], "hold")
        kvs = reply.responses[0].response_range.kvs
        return decode_hold(kvs[0].value) if kvs else None

    async def watch(self, gid: str) -> AsyncGenerator[Stored | None, None]:
        current = await self.get(gid)
        yield current
        start = (current.revision + 1) if current else 0
        watch = self._client.watch
        if watch is None:
            raise LogError("etcd client is not connected")
        # Closed with this generator, not left to the garbage collector (whose aclose of a
        # generator still running logs "Task exception was never retrieved").
        responses: Any = watch.watch(self._tx(gid), start_revision=start)  # a generator
        async with contextlib.aclosing(responses) as events:
            async for response in events:
                for event in response.events:
                    if event.type == event.DELETE:
                        yield None
                    else:
                        yield Stored(decode(event.kv.value), event.kv.mod_revision)


ETCD_KEEPALIVE_MS = 5000  # etcd refuses pings more often (--grpc-keepalive-min-time, 5 s)
ETCD_PING_TIMEOUT_MS = 1000


def _etcd_channel_options(given: list[Any], max_receive_bytes: int) -> list[Any]:
    """etcd3aio's channel options, with: the reply size a page of records needs, and a
    member that stops answering (paused, black-holed) dropped about a second after a
    keepalive ping goes unanswered, so its requests move to another member (gRPC's
    default waits a minute for a ping that is not the keepalive's own)."""
    ours = {"grpc.max_receive_message_length": max_receive_bytes,
            "grpc.keepalive_time_ms": ETCD_KEEPALIVE_MS,
            "grpc.keepalive_timeout_ms": ETCD_PING_TIMEOUT_MS,
            "grpc.http2.ping_timeout_ms": ETCD_PING_TIMEOUT_MS}
    return [(k, v) for k, v in given if k not in ours] + list(ours.items())


def _full(state: Any, payloads: Any) -> Stored | None:
    """A whole record from the responses of ``_read_ops`` (None when it does not exist)."""
    kvs = state.response_range.kvs
    if not kvs:
        return None
    extra = payloads.response_range.kvs
    record = with_payloads(decode(kvs[0].value), extra[0].value if extra else None)
    return Stored(record, kvs[0].mod_revision)


class _RetentionLeases:

    """Leases that expire finished records: one lease per time bucket, shared by the
    records that finish in it, so retention costs no scans and one grant per bucket."""

    def __init__(self, log_: EtcdLog, retention_s: int) -> None:
        self._log = log_
        self._retention_s = max(1, retention_s)
        self._bucket_s = max(1, self._retention_s // 100)
        self._leases: dict[int, int] = {}
        self._lock = asyncio.Lock()

    async def lease_for(self, record: TxRecord) -> int:
        bucket = int(time.time()) // self._bucket_s
        lease = self._leases.get(bucket)
        if lease is not None:
            return lease
        async with self._lock:
            if bucket not in self._leases:
                grant = await self._log._call(
                    self._log._kv_lease().grant(self._retention_s + self._bucket_s), "lease")
                self._leases = {bucket: grant.ID}  # older buckets' leases live on in etcd
            return self._leases[bucket]
