"""The operations each participant says it serves (its optional ``Operations`` call), asked
before a start and cached per address, so that a start naming an operation a participant
does not serve is refused with INVALID_ARGUMENT before anything runs.

The check never holds a start back for long and never refuses on doubt: a participant
without the call (UNIMPLEMENTED), one that fails or does not answer within the probe's
deadline, is remembered as "unknown" for the same time-to-live, and its branches are not
checked. Concurrent starts naming one address share one probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import grpc

from .._proto.txc.v1 import participant_pb2 as ppb
from ..domain.errors import InvalidArgument
from ..domain.records import BranchPlan, NotifyPlan, Protocol

log = logging.getLogger("txcoord.engine")

Probe = Callable[[str, float], Awaitable[ppb.OperationsReply]]
"""Ask one participant address for its operations, within a deadline in seconds."""

_SHOWN = 20  # names listed in a refusal at most


@dataclass(frozen=True, slots=True)
class OperationsCheck:
    """Whether and how starts are checked against the participants' ``Operations``."""

    enabled: bool = True
    ttl_s: float = 30.0
    """How long an answer (or its absence) is used before the address is asked again."""
    probe_timeout_s: float = 0.5
    """Deadline of one probe: the most a start can wait for an address not yet cached."""

    def __post_init__(self) -> None:
        for name in ("ttl_s", "probe_timeout_s"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"{name}: must be a positive number of seconds, not {value}")


@dataclass(frozen=True, slots=True)
class _Known:
    served: ppb.OperationsReply | None  # None: no list (UNIMPLEMENTED, error, no answer)
    until: float  # monotonic time


class ServedOperations:
    """A per-address cache of ``Operations`` answers, and the check of a plan against it."""

    def __init__(self, probe: Probe, options: OperationsCheck | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self._options = options or OperationsCheck()
        self._clock = clock
        self._known: dict[str, _Known] = {}
        self._asking: dict[str, asyncio.Future[ppb.OperationsReply | None]] = {}

    async def check(self, plan: Iterable[BranchPlan], protocol: Protocol,
                    notify: NotifyPlan | None = None) -> None:
        """Raise InvalidArgument naming the first branch whose operation its participant
        says it does not serve (then ``notify.operation``, which is called as an Execute)."""
        branches = list(plan)
        answers: dict[str, ppb.OperationsReply | None] = {}
        missing = []
        addresses = {b.participant for b in branches} | ({notify.participant} if notify else set())
        for address in addresses:
            known = self._fresh(address)
            if known is None:
                missing.append(address)
            else:
                answers[address] = known.served
        if missing:  # the usual start finds every address cached and awaits nothing
            answers.update(zip(missing, await asyncio.gather(*map(self.served, missing)),
                               strict=True))
        for i, b in enumerate(branches):
            served = answers[b.participant]
            if served is None:
                continue
            if protocol is Protocol.TWO_PHASE:
                _require(i, b, "action", b.action, "Prepare", served.prepare)
                continue
            _require(i, b, "action", b.action, "Execute", served.execute)
            if b.compensation:
                _require(i, b, "compensation", b.compensation, "Compensate", served.compensate)
        served = answers[notify.participant] if notify else None
        if notify and served is not None and notify.operation not in served.execute:
            raise InvalidArgument("notify.operation", f"participant {notify.participant} does not "
                                  f"serve {notify.operation!r} for Execute (it serves: "
                                  f"{_shown(served.execute) or 'none'})")

    async def served(self, address: str) -> ppb.OperationsReply | None:
        """``address``'s list, from the cache or one shared probe (None: no list)."""
        known = self._fresh(address)
        if known is not None:
            return known.served
        asking = self._asking.get(address)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(address))
            self._asking[address] = asking
            asking.add_done_callback(lambda _: self._asking.pop(address, None))
        return await asyncio.shield(asking)

    def _fresh(self, address: str) -> _Known | None:
        known = self._known.get(address)
        return known if known is not None and known.until > self._clock() else None

    async def _ask(self, address: str) -> ppb.OperationsReply | None:
        served: ppb.OperationsReply | None
        try:
            served = await asyncio.wait_for(self._probe(address, self._options.probe_timeout_s),
                                            self._options.probe_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                log.info("participant %s did not list its operations (%s): its starts are not "
                         "checked for %g s", address, exc.code().name, self._options.ttl_s)
            served = None
        except Exception as exc:  # no answer in time, or none that reads: no check
            log.info("participant %s did not list its operations (%s): its starts are not "
                     "checked for %g s", address, type(exc).__name__, self._options.ttl_s)
            served = None
        self._known[address] = _Known(served, self._clock() + self._options.ttl_s)
        if len(self._known) > 4096:  # addresses come from requests: keep the cache bounded
            now = self._clock()
            self._known = {a: k for a, k in self._known.items() if k.until > now}
        return served


def _require(i: int, branch: BranchPlan, field: str, name: str, method: str,
             served: Iterable[str]) -> None:
    if name in served:
        return
    raise InvalidArgument(
        f"branches[{i}].{field}",
        f"branch {branch.name!r}: participant {branch.participant} does not serve {name!r} "
        f"for {method} (it serves: {_shown(served) or 'none'})")


def _shown(served: Iterable[str]) -> str:
    names = list(served)
    return ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
