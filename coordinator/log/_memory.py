"""In-memory TxLog for unit tests: the same CAS and ownership rules as etcd, no I/O.

Several MemoryLog instances may share one MemoryStore to play several coordinators;
``MemoryStore.expire(owner_id)`` stands in for a lease running out.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from ..domain.holds import Hold
from ..domain.records import TxRecord, TxState
from ._codec import encode, encode_payloads
from ._interface import Created, LogError, LostOwnership, Stored


@dataclass
class MemoryStore:
    records: dict[str, Stored] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # gid -> owner id
    live_owners: set[str] = field(default_factory=set)
    revision: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    requests: int = 0  # how many store round-trips were made, as etcd would count them
    max_request_bytes: int = 1536 * 1024 - 64 * 1024  # as EtcdLog's default
    departed: list[str] = field(default_factory=list)  # owners whose lease ended, in order
    cut_off: set[str] = field(default_factory=set)  # owners that cannot reach the store
    epochs: dict[str, int] = field(default_factory=dict)  # owner -> leases it has taken
    holds: dict[str, Hold] = field(default_factory=dict)  # address -> hold

    def expire(self, owner_id: str) -> None:
        self.live_owners.discard(owner_id)
        self.departed.append(owner_id)
        for gid in [g for g, o in self.owners.items() if o == owner_id]:
            del self.owners[gid]

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class MemoryLog:
    def __init__(self, store: MemoryStore | None = None, owner_id: str = "mem-1") -> None:
        self.store = store or MemoryStore()
        self._owner_id = owner_id

    @property
    def lease_epoch(self) -> int:
        return self.store.epochs.get(self._owner_id, 0)

    @property
    def owner_id(self) -> str:
        return self._owner_id

    async def open(self) -> None:
        self.store.live_owners.add(self._owner_id)
        self.store.epochs[self._owner_id] = self.lease_epoch + 1

    async def close(self, *, release: bool = True) -> None:
        if release:
            self.store.expire(self._owner_id)

    def lease_alive(self) -> bool:
        return self._owner_id in self.store.live_owners

    def reachable(self) -> bool:
        return self.lease_alive() and self._owner_id not in self.store.cut_off

    def _request(self) -> None:
        """One round trip to the store: refused while this owner is cut off from it."""
        if self._owner_id in self.store.cut_off:
            raise LogError(f"store unreachable from {self._owner_id}")
        self.store.requests += 1

    async def create(self, record: TxRecord) -> Created:
        self._request()
        existing = self.store.records.get(record.gid)
        if existing is not None:
            return Created(existing, created=False)
        stored = Stored(replace(record, seq=1), next(self.store.revision))
        self.store.records[record.gid] = stored
        if not record.state.terminal:
            self.store.owners[record.gid] = self._owner_id
        await self.store.notify()
        return Created(stored, created=True)

    async def write(self, prev: Stored, new: TxRecord) -> Stored:
        (result,) = await self._write_many([(prev, new)])
        if isinstance(result, LostOwnership):
            raise result
        return result

    async def _write_many(
        self, writes: Sequence[tuple[Stored, TxRecord]]
    ) -> list[Stored | LostOwnership]:

        self._request()
        results: list[Stored | LostOwnership] = []
        for prev, new in writes:
            current = self.store.records.get(new.gid)
            owner = self.store.owners.get(new.gid)
            if current is None or current.revision != prev.revision or owner != self._owner_id:
                results.append(LostOwnership(new.gid, current))
                continue
            stored = Stored(replace(new, seq=prev.record.seq + 1), next(self.store.revision))
            self.store.records[new.gid] = stored
            if new.finished:
                self.store.owners.pop(new.gid, None)
            results.append(stored)
        await self.store.notify()
        return results

    def value_bytes(self, record: TxRecord) -> tuple[int, int]:
        return len(encode(record)), len(encode_payloads(record))

    @property
    def max_request_bytes(self) -> int:
        return self.store.max_request_bytes

    async def get(self, gid: str) -> Stored | None:
        self._request()
        return self.store.records.get(gid)

    async def scan(self, *, start_after: str = "", limit: int = 100, prefix: str = "") -> list[Stored]:
        self._request()
        gids = sorted(g for g in self.store.records if g > start_after and g.startswith(prefix))
        gids = gids[:limit]

        return [self.store.records[g] for g in gids]

    async def claim(self, stored: Stored) -> Stored:
        self._request()
        current = self.store.records.get(stored.record.gid)
        if current is None or current.revision != stored.revision:
            raise LostOwnership(stored.record.gid, current)
        self.store.owners[stored.record.gid] = self._owner_id
        return stored

    async def claim_orphans(self, limit: int = 100) -> list[Stored]:
        self._request()
        claimed: list[Stored] = []
        for gid, stored in sorted(self.store.records.items()):
            if len(claimed) >= limit:
                break
            if stored.record.finished or gid in self.store.owners:
                continue
            self.store.owners[gid] = self._owner_id
            claimed.append(stored)
        return claimed

    async def count_failed(self) -> int:
        self._request()
        return sum(1 for s in self.store.records.values() if s.record.state is TxState.FAILED)

    async def mine(self) -> list[str]:
        self._request()
        return sorted(g for g, o in self.store.owners.items() if o == self._owner_id)

    async def watch(self, gid: str) -> AsyncGenerator[Stored | None, None]:
        last: Stored | None = None
        while True:
            current = self.store.records.get(gid)
            if current is not last:
                yield current
                last = current
            async with self.store.changed:
                await self.store.changed.wait()

    async def departures(self) -> AsyncIterator[str]:
        seen = set(self.store.departed)
        while True:
            for owner in self.store.departed:
                if owner not in seen:
                    seen.add(owner)
                    yield owner
            async with self.store.changed:
                await self.store.changed.wait()

    def delete(self, gid: str) -> None:
        """Retention stand-in: drop a record."""
        self.store.records.pop(gid, None)
        self.store.owners.pop(gid, None)

    async def holds(self) -> list[Hold]:
        self._request()
        return sorted(self.store.holds.values(), key=lambda h: h.address)

    async def put_hold(self, hold: Hold) -> None:
        self._request()
        self.store.holds[hold.address] = hold

    async def delete_hold(self, address: str) -> Hold | None:
        self._request()
        return self.store.holds.pop(address, None)
